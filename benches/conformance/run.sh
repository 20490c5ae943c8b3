#!/bin/bash
# The Autobahn|Testsuite cases, run straight to a WebSocket echo backend and
# then through Switchyard, every case's verdict compared.
#
#   bash benches/conformance/run.sh [KOSOKU ARGS…]      e.g. -i '5.*' -i '7.*'
#   BACKEND=websockets bash benches/conformance/run.sh   # Python's websockets,
#                                                        # with permessage-deflate
#
# Autobahn's own runner (wstest) needs Python 2. kosoku (PyPI) drives the
# same Autobahn case files from a Rust runner with Python 3; it is installed
# into a virtual environment under target/. The backend is the bench suite's
# (tokio-tungstenite, echoing every message; it has no permessage-deflate, so
# the compression cases 12.* and 13.* are UNIMPLEMENTED) or, with
# BACKEND=websockets, Python's websockets (which has); the proxy runs with its
# default WebSocket settings (frames read both ways, pings every 30 s).
# Writes target/conformance/BACKEND/{direct,proxy}/ (kosoku's reports) and
# target/conformance/BACKEND/comparison.md; exits 1 if any verdict differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
backend=${BACKEND:-tungstenite}
out=$root/target/conformance/$backend
venv=$root/target/conformance-venv
mkdir -p "$out"
if [ ! -x "$venv/bin/kosoku" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'kosoku==0.1.0' 'websockets==17.4'
fi
cargo build --release --quiet --bin switchyard
cargo bench --bench proxies --no-run --quiet 2>/dev/null
backend_bin=$(ls -t target/release/deps/proxies-* | grep -v '\.d$' | head -1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend_port=$(free_port)
proxy_port=$(free_port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

case $backend in
    tungstenite) "$backend_bin" --backend "127.0.0.1:$backend_port" > "$out/backend.log" 2>&1 & ;;
    websockets) "$venv/bin/python" benches/conformance/echo_websockets.py "$backend_port" > "$out/backend.log" 2>&1 & ;;
    *) echo "BACKEND must be tungstenite or websockets" >&2; exit 2 ;;
esac
pids+=($!)
for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $backend_port), 0.2)" 2>/dev/null && break
    sleep 0.1
done
cat > "$out/switchyard.toml" <<TOML
[[listener]]
bind = "127.0.0.1:$proxy_port"

[upstream.echo]
servers = ["127.0.0.1:$backend_port"]

[[route]]
path = "/"
upstream = "echo"
max_message_size = "64MiB"
TOML
RUST_LOG=info,access=off target/release/switchyard run -c "$out/switchyard.toml" > "$out/switchyard.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "listening on" "$out/switchyard.log" 2>/dev/null && break
    sleep 0.1
done

run() {
    local name=$1 port=$2
    shift 2
    rm -rf "${out:?}/$name"
    local started=$SECONDS
    "$venv/bin/kosoku" -m fuzzingclient -p 4 -o "$out/$name" "$@" "127.0.0.1:$port" > "$out/$name.log" 2>&1 || true
    echo "$name: $((SECONDS - started)) s"
}
run direct "$backend_port" "$@"
run proxy "$proxy_port" "$@"

python3 "$root/benches/conformance/compare.py" "$out/direct" "$out/proxy" | tee "$out/comparison.md"
