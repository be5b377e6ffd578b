"""Start and stop `hatoba up` for the Python bench drivers (api_run.py,
long_lived_run.py)."""
import asyncio
import os
import signal
import subprocess
import time


async def start(hatoba, state, spec, log_path):
    """`hatoba --state-dir STATE up -f SPEC`, its output in `log_path`;
    returns once its server.json and token are written (60 s at most)."""
    up = subprocess.Popen([hatoba, "--state-dir", state, "up", "-f", spec],
                          stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not (os.path.exists(os.path.join(state, "server.json"))
               and os.path.exists(os.path.join(state, "token"))):
        if up.poll() is not None or time.time() > deadline:
            stop(up)
            raise RuntimeError(f"hatoba up did not start (log: {log_path})")
        await asyncio.sleep(0.05)  # poll interval
    return up


def stop(up):
    """SIGTERM, then SIGKILL after 60 s."""
    if up.poll() is not None:
        return
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        up.kill()
