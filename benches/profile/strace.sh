#!/bin/bash
# System calls of a Switchyard binary per echoed WebSocket round trip
# (strace -c on every thread during an echo run).
#
#   benches/profile/strace.sh BINARY LABEL [SECONDS] [CONNS]
#
# Needs strace and `cargo bench --bench proxies --no-run` (its backend).
set -u
BIN=$1; LABEL=$2; SECS=${3:-5}; CONNS=${4:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOL=$ROOT/target/release/switchyard
BACKEND_BIN=$(ls -t $ROOT/target/release/deps/proxies-* | grep -v '\.d$' | head -1)
OUT=$ROOT/target/profile/st-$LABEL; mkdir -p $OUT
BPORT=$((20000 + RANDOM % 10000)); PPORT=$((BPORT + 1))
$BACKEND_BIN --backend 127.0.0.1:$BPORT > $OUT/backend.log 2>&1 &
BPID=$!
cat > $OUT/proxy.toml <<TOML
[server]
workers = 1
shutdown_timeout = "1s"
[[listener]]
bind = "127.0.0.1:$PPORT"
[upstream.backend]
servers = ["127.0.0.1:$BPORT"]
[[route]]
path = "/"
upstream = "backend"
idle_timeout = "1h"
${EXTRA:-}
TOML
sleep 0.5
RUST_LOG=info,access=off $BIN run -c $OUT/proxy.toml > $OUT/proxy.log 2>&1 &
PID=$!
for i in $(seq 1 50); do grep -q "listening on" $OUT/proxy.log && break; sleep 0.2; done
$TOOL bench handshake ws://127.0.0.1:$PPORT/ -c 2 -d 1s > /dev/null 2>&1
timeout $((SECS + 5)) strace -c -f -p $PID -o $OUT/strace.txt &
SPID=$!
sleep 0.5
$TOOL bench echo ws://127.0.0.1:$PPORT/ -c $CONNS -s 64 -d ${SECS}s > $OUT/bench.txt 2>&1
kill -INT $SPID; wait $SPID 2>/dev/null
kill -TERM $PID; wait $PID 2>/dev/null
kill -TERM $BPID; wait $BPID 2>/dev/null
RT=$(grep -m1 "round trips" $OUT/bench.txt | awk '{print $3}')
echo "$LABEL round trips $RT"
awk -v rt=$RT 'NR>2 && $NF !~ /total/ && NF>=5 {c=$4; name=$NF; if ($4 ~ /^[0-9]+$/) printf "%-14s %8d calls  %.3f per round trip\n", name, c, c/rt} /total/ {printf "total %s calls %.3f per round trip\n", $3, $3/rt}' $OUT/strace.txt
