#!/usr/bin/env bash
# Copies a hatoba binary and the shared libraries it needs (as `ldd` lists
# them) into rootfs/ next to this script, at the paths they have on this
# machine, for the `FROM scratch` image of the Dockerfile here.
#
#   examples/seeds-canary/stage.sh [HATOBA]     # default: `hatoba` on PATH
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-$(command -v hatoba || true)}
[[ -n $BIN && -x $BIN ]] || {
    echo "stage.sh: no hatoba binary (give its path, or put it on PATH)" >&2
    exit 2
}
ROOT=$HERE/rootfs
rm -rf "$ROOT"
mkdir -p "$ROOT"
cp "$BIN" "$ROOT/hatoba"
n=0
if ldd "$BIN" >/dev/null 2>&1; then
    # `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and the
    # loader's own `/lib64/ld-linux-x86-64.so.2 (0x...)`.
    while read -r lib; do
        mkdir -p "$ROOT$(dirname "$lib")"
        cp "$lib" "$ROOT$lib"
        n=$((n + 1))
    done < <(ldd "$BIN" | grep -o '/[^ ]*')
fi
echo "staged $BIN with $n libraries in $ROOT"
