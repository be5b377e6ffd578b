#!/usr/bin/env bash
# The API against its own OpenAPI document: a live `hatoba up` (the
# quickstart spec on free loopback ports, its own state directory) and
# schemathesis (PyPI) with every check but "schema-valid data is
# accepted" (the document gives types, not every rule: `0` is a valid
# string and not a secret name). Fails on any 5xx, any answer that does
# not match the document, and on the server dying. Seeded, bounded. The
# event stream's short timeout is in .ci/schemathesis.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
hatoba="$CARGO_TARGET_DIR/debug/hatoba"
[ -x "$hatoba" ] || { echo "ci: $hatoba is not built" >&2; exit 1; }
command -v schemathesis >/dev/null 2>&1 || python3 -m pip install -q schemathesis
dir=$(mktemp -d)
up=""
stop() {
  if [ -n "$up" ]; then kill -TERM "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap stop EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sed -e "s/127.0.0.1:8080/127.0.0.1:$(free_port)/" -e "s/127.0.0.1:8090/127.0.0.1:$(free_port)/" \
  examples/quickstart/hatoba.yaml >"$dir/hatoba.yaml"
PATH="$(dirname "$hatoba"):$PATH" "$hatoba" --state-dir "$dir/state" up -f "$dir/hatoba.yaml" >"$dir/up.log" 2>&1 &
up=$!
for _ in $(seq 300); do [ -s "$dir/state/server.json" ] && break; sleep 0.1; done
api=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"])' "$dir/state/server.json")
status=0
schemathesis --config-file .ci/schemathesis.toml run "http://$api/api/v1/openapi.json" \
  -H "Authorization: Bearer $(cat "$dir/state/token")" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples 100 --workers 2 --seed 1 || status=$?
if ! kill -0 "$up" 2>/dev/null; then
  echo "ci: hatoba up died under schemathesis:" >&2
  tail -20 "$dir/up.log" >&2
  status=1
fi
exit "$status"
