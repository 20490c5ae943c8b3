#!/usr/bin/env bash
# Slow attacks against a Switchyard listener while a normal client keeps
# requesting: slowhttptest (Debian's package) in slowloris (-H), slow-body
# (-B) and slow-read (-X) modes. For each mode, in one run: the normal
# client's p99 without the attack, then with it, and slowhttptest's own
# count of the attack's connections closed by the proxy.
#
#   benches/slow_attacks.sh            # needs target/release/switchyard
#
# Everything is on 127.0.0.1 and stops by itself (each attack is bounded by
# -l SECONDS); the processes it starts are ended by their PID.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/switchyard
ATTACK_SECONDS=${ATTACK_SECONDS:-60}
CLIENT_SECONDS=${CLIENT_SECONDS:-20}
CONNS=${CONNS:-1000}
[ -x "$BIN" ] || { echo "build it first: cargo build --release" >&2; exit 1; }
command -v slowhttptest >/dev/null || { echo "apt-get install -y slowhttptest" >&2; exit 1; }
ulimit -n 20000

dir=$(mktemp -d /tmp/switchyard-slow-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# A backend with a response large enough to fill socket buffers (slow read).
mkdir -p "$dir/www"
chmod 755 "$dir" "$dir/www"   # nginx workers run as nobody
head -c 1048576 /dev/urandom > "$dir/www/big.bin"
echo "hello" > "$dir/www/index.html"
# The backend: nginx serving the folder when installed (it never stalls
# mid-body, so what holds a slow reader is the proxy's doing), else
# Python's http.server (listen backlog 5, a thread per connection).
if command -v nginx >/dev/null; then
  backend_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$dir/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$backend_port backlog=4096; root $dir/www; }
}
NGINX
  nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' > "$dir/backend.log" 2>&1 &
  pids+=($!)
  backend="nginx"
  for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$backend_port),0.2)" 2>/dev/null && break; sleep 0.1; done
else
  (cd "$dir/www" && exec python3 -m http.server 0 --bind 127.0.0.1) > "$dir/backend.log" 2>&1 &
  pids+=($!)
  backend="python3 -m http.server"
  for _ in $(seq 100); do grep -q "port" "$dir/backend.log" 2>/dev/null && break; sleep 0.1; done
  backend_port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$dir/backend.log" | head -1)
fi

cat > "$dir/switchyard.toml" <<TOML
# The defaults, but for the body and send timeouts, shortened so a run
# takes minutes: client_header_timeout 10s, client_body_timeout 20s,
# send_timeout 20s.
[server]
access_log = "off"
client_header_timeout = "10s"
client_body_timeout = "20s"
send_timeout = "20s"
[[listener]]
bind = "127.0.0.1:0"
[upstream.web]
servers = ["127.0.0.1:$backend_port"]
[[route]]
path = "/"
upstream = "web"
TOML
"$BIN" run -c "$dir/switchyard.toml" > "$dir/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$dir/proxy.log" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([0-9.:]*\) .*/\1/p' "$dir/proxy.log" | head -1)
url="http://$addr/"
echo "proxy on $addr, backend ($backend) on 127.0.0.1:$backend_port, files in $dir"

p99() { # the normal client: 4 keep-alive connections of small GETs
  "$BIN" bench http "$url" -c 4 -d "${CLIENT_SECONDS}s" --json 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["latency"]["p99_us"], r["ops"], sum(v for k,v in r["http_status"].items() if not k.startswith("2")))'
}

run() { # MODE-NAME slowhttptest-args...
  local name=$1; shift
  read -r base_p99 base_ops base_bad < <(p99)
  slowhttptest -c "$CONNS" -r 200 -l "$ATTACK_SECONDS" -g -o "$dir/$name" -u "${url}big.bin" "$@" \
    > "$dir/$name.out" 2>&1 &
  local attack=$!
  pids+=($attack)
  sleep 15   # let the attack reach its connection count
  read -r att_p99 att_ops att_bad < <(p99)
  wait "$attack" || true
  local csv="$dir/$name.csv"
  # slowhttptest's CSV: seconds,closed,pending,connected,service available
  local closed max_connected
  closed=$(tail -1 "$csv" | cut -d, -f2)
  max_connected=$(tail -n +2 "$csv" | cut -d, -f4 | sort -n | tail -1)
  python3 - "$name" "$base_p99" "$att_p99" "$base_ops" "$att_ops" "$base_bad" "$att_bad" "$closed" "$max_connected" <<'PY'
import sys
name, b, a, bo, ao, bb, ab, closed, peak = sys.argv[1:]
b, a = float(b), float(a)
print(f"{name}: normal client p99 {b/1000:.2f} ms without, {a/1000:.2f} ms with the attack "
      f"({a/b:.2f}x); requests {bo} / {ao}, non-2xx {bb} / {ab}; "
      f"attack connections closed by the proxy {closed}, most open at once {peak}")
PY
}

run slowloris -H -i 5 -s 8192
run slow-body -B -i 30 -s 8192 -t POST
run slow-read -X -k 3 -n 30 -w 10 -y 20 -z 32
echo "proxy log: $(grep -c . "$dir/proxy.log") lines; panics: $(grep -c panicked "$dir/proxy.log" || true)"
