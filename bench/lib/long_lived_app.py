#!/usr/bin/env python3
"""A streaming app for bench/long_lived.sh, written with aiohttp (an app
Hatoba's code never saw): WebSockets and server-sent events.

  GET  /        200 "<version>" (plain requests)
  GET  /ready   200
  GET  /ws      WebSocket: {"seq": n, "version": v} every --tick
  GET  /sse     text/event-stream: `id: n` / `data: <version> n` every --tick
  POST /drain   drain.notify: every open stream is asked to reconnect
                (WebSocket close 1012 "service restart", SSE ends with an
                `event: reconnect`), so clients move to the new version

--on-term polite: SIGTERM closes every stream with a close frame (1001) or
the SSE stream's end, then exits; --on-term ignore: SIGTERM is ignored (the
runtime's SIGKILL ends it after the grace period).
"""
import argparse
import asyncio
import json
import os
import signal

from aiohttp import WSCloseCode, web


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True)
    ap.add_argument("--on-term", choices=["polite", "ignore"], default="polite")
    ap.add_argument("--tick", type=float, default=0.1)
    args = ap.parse_args()
    port = int(os.environ["PORT"])
    streams = set()  # (kind, object, end event)

    async def index(_):
        return web.Response(text=args.version)

    async def ready(_):
        return web.Response(text="ready")

    async def ws(request):
        sock = web.WebSocketResponse(heartbeat=None)
        await sock.prepare(request)
        end = asyncio.Event()
        entry = ("ws", sock, end)
        streams.add(entry)

        async def read():
            # Reads what the client sends, its close frame included
            # (answered by aiohttp), then ends the sending loop.
            async for _ in sock:
                pass
            end.set()

        reader = asyncio.ensure_future(read())
        seq = 0
        try:
            while not end.is_set() and not sock.closed:
                seq += 1
                await sock.send_str(json.dumps({"seq": seq, "version": args.version}))
                try:
                    await asyncio.wait_for(end.wait(), args.tick)
                except asyncio.TimeoutError:
                    pass
            if not sock.closed:
                code = close_codes.pop(id(sock), WSCloseCode.GOING_AWAY)
                await sock.close(code=code, message=b"reconnect")
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            streams.discard(entry)
            close_codes.pop(id(sock), None)
            reader.cancel()
        return sock

    async def sse(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        end = asyncio.Event()
        entry = ("sse", resp, end)
        streams.add(entry)
        seq = 0
        try:
            while not end.is_set():
                seq += 1
                await resp.write(f"id: {seq}\ndata: {args.version} {seq}\n\n".encode())
                try:
                    await asyncio.wait_for(end.wait(), args.tick)
                except asyncio.TimeoutError:
                    pass
            await resp.write(b"event: reconnect\ndata: bye\n\n")
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            streams.discard(entry)
        return resp

    close_codes = {}  # id(stream) -> the close code its handler sends

    async def close_all(code):
        # Each handler closes its own stream when its loop ends: a close
        # from here would race the handler's sends.
        for _, obj, end in list(streams):
            close_codes[id(obj)] = code
            end.set()

    async def drain(_):
        await close_all(WSCloseCode.SERVICE_RESTART)
        return web.Response(text="draining")

    async def on_startup(app):
        loop = asyncio.get_running_loop()
        if args.on_term == "ignore":
            loop.add_signal_handler(signal.SIGTERM, lambda: None)
        else:

            def polite():
                async def bye():
                    await close_all(WSCloseCode.GOING_AWAY)
                    await asyncio.sleep(0.2)  # pacing: the close frames leave before the exit
                    os._exit(0)

                asyncio.ensure_future(bye())

            loop.add_signal_handler(signal.SIGTERM, polite)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/ready", ready)
    app.router.add_get("/ws", ws)
    app.router.add_get("/sse", sse)
    app.router.add_post("/drain", drain)
    app.on_startup.append(on_startup)
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=False, access_log=None)


if __name__ == "__main__":
    main()
