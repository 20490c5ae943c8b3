#!/bin/bash
# WebSocket bulk through a one-worker Switchyard over wss:// with HTTP/1.1
# against the same over HTTP/2 (RFC 8441 streams), per MB sent plus
# received by the client (`switchyard bench bulk -c 4 -s 64KiB`, the h2
# run with `--http2 --streams 4`: four streams on one connection).
#
#   benches/profile/bulk_h2.sh cpu [ROUNDS] [SECONDS]
#       proxy CPU (utime + stime from /proc) per MB and MB/s, the two
#       interleaved round after round on one proxy
#   benches/profile/bulk_h2.sh callgrind [SECONDS]
#       instructions per MB with valgrind's callgrind, counters zeroed
#       after a 2 s warm-up (counts that do not depend on the load)
#
# Needs `cargo bench --bench proxies --no-run` (its backend), openssl, and
# valgrind for the second form. Output in target/profile/bulk-h2/.
set -u
WHAT=${1:-cpu}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOL=$ROOT/target/release/switchyard
BACKEND_BIN=$(ls -t "$ROOT"/target/release/deps/proxies-* | grep -v '\.d$' | head -1)
OUT=$ROOT/target/profile/bulk-h2; rm -rf "$OUT"; mkdir -p "$OUT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
BPORT=$((20000 + RANDOM % 10000)); PPORT=$((BPORT + 1))
"$BACKEND_BIN" --backend 127.0.0.1:$BPORT > "$OUT/backend.log" 2>&1 &
BPID=$!
cat > "$OUT/proxy.toml" <<TOML
[server]
workers = 1
shutdown_timeout = "1s"
[[listener]]
bind = "127.0.0.1:$PPORT"
tls = { cert = "$OUT/cert.pem", key = "$OUT/key.pem" }
[upstream.backend]
servers = ["127.0.0.1:$BPORT"]
[[route]]
path = "/"
upstream = "backend"
idle_timeout = "1h"
TOML
sleep 0.5
flags() { [ "$1" = h2 ] && echo "--http2 --streams 4"; }
# The client checks nothing: the certificate is made here, for this run.
bulk() { "$TOOL" bench bulk "wss://localhost:$PPORT/" -c 4 -s 64KiB -d "$2" --insecure --json $(flags "$1") 2>/dev/null; }
mb() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print((d["bytes_sent"]+d["bytes_received"])/1e6, d["elapsed_secs"])' "$1"; }

case $WHAT in
cpu)
    ROUNDS=${2:-3}; SECS=${3:-3}
    RUST_LOG=info,access=off "$TOOL" run -c "$OUT/proxy.toml" > "$OUT/proxy.log" 2>&1 &
    PPID_=$!
    for _ in $(seq 1 100); do grep -q "listening on" "$OUT/proxy.log" && break; sleep 0.1; done
    ticks() { awk '{print $14 + $15}' "/proc/$PPID_/stat"; }
    HZ=$(getconf CLK_TCK)
    for r in $(seq 1 "$ROUNDS"); do
        for m in h1 h2; do
            t0=$(ticks); bulk $m "${SECS}s" > "$OUT/$m.$r.json"; t1=$(ticks)
            read -r MB ELAPSED <<< "$(mb "$OUT/$m.$r.json")"
            python3 -c 'import sys; m,mb,el,t=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4])/int(sys.argv[5]); print(f"{m} round {sys.argv[6]}: {mb/el:.0f} MB/s, proxy CPU {t*1000/mb:.3f} ms/MB ({mb:.0f} MB)")' \
                $m "$MB" "$ELAPSED" $((t1 - t0)) "$HZ" "$r"
        done
    done
    kill -TERM $PPID_; wait $PPID_ 2>/dev/null
    ;;
callgrind)
    SECS=${2:-4}
    for m in h1 h2; do
        RUST_LOG=info,access=off valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$m" \
            "$TOOL" run -c "$OUT/proxy.toml" > "$OUT/proxy.$m.log" 2>&1 &
        PPID_=$!
        for _ in $(seq 1 100); do grep -q "listening on" "$OUT/proxy.$m.log" && break; sleep 0.3; done
        bulk $m 2s > /dev/null
        VPID=$(pgrep -f "callgrind-out-file=$OUT/cg.$m" | head -1)
        callgrind_control -z "$VPID" > /dev/null
        bulk $m "${SECS}s" > "$OUT/$m.json"
        callgrind_control -d "$VPID" > /dev/null
        sleep 1
        kill -TERM $PPID_; wait $PPID_ 2>/dev/null
        IR=$(callgrind_annotate "$OUT/cg.$m.1" 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",", "", $1); print $1}')
        read -r MB _ <<< "$(mb "$OUT/$m.json")"
        python3 -c 'import sys; print(f"{sys.argv[1]}: {int(sys.argv[2])/float(sys.argv[3])/1e6:.2f} M instructions/MB ({float(sys.argv[3]):.0f} MB)")' $m "$IR" "$MB"
    done
    ;;
*) echo "usage: $0 cpu [ROUNDS] [SECONDS] | callgrind [SECONDS]" >&2 ;;
esac
kill -TERM $BPID; wait $BPID 2>/dev/null
