#!/bin/bash
# Instruction counts of a Switchyard binary per echoed WebSocket round trip
# (or per MB in bulk mode), with valgrind's callgrind: counts that do not
# depend on the machine's load. One worker; counters zeroed after a warm-up
# and dumped at the end of the load, so start-up is not counted.
#
#   benches/profile/callgrind.sh BINARY LABEL [SECONDS] [CONNS] [SIZE] [MODE]
#   e.g. benches/profile/callgrind.sh target/release/switchyard new 10 8 64 echo
#
# Needs valgrind and `cargo bench --bench proxies --no-run` (its backend).
# Output in target/profile/LABEL/ (cg.out.1: open with callgrind_annotate).
set -u
BIN=$1; LABEL=$2; SECS=${3:-10}; CONNS=${4:-8}; SIZE=${5:-64}; MODE=${6:-echo}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TOOL=$ROOT/target/release/switchyard
BACKEND_BIN=$(ls -t $ROOT/target/release/deps/proxies-* | grep -v '\.d$' | head -1)
OUT=$ROOT/target/profile/$LABEL; mkdir -p $OUT
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
sleep 1
RUST_LOG=info,access=off valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.out $BIN run -c $OUT/proxy.toml > $OUT/proxy.log 2>&1 &
PPID_=$!
for i in $(seq 1 100); do grep -q "listening on" $OUT/proxy.log && break; sleep 0.3; done
$TOOL bench handshake ws://127.0.0.1:$PPORT/ -c 2 -d 1s > /dev/null 2>&1
VPID=$(pgrep -f "callgrind-out-file=$OUT/cg.out" | head -1)
callgrind_control -z $VPID > /dev/null
$TOOL bench $MODE ws://127.0.0.1:$PPORT/ -c $CONNS -s $SIZE -d ${SECS}s > $OUT/bench.txt 2>&1
callgrind_control -d $VPID > /dev/null
sleep 1
kill -TERM $PPID_; wait $PPID_ 2>/dev/null
kill -TERM $BPID; wait $BPID 2>/dev/null
IR=$(callgrind_annotate $OUT/cg.out.1 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk "{gsub(\",\",\"\",\$1); print \$1}")
echo "$LABEL Ir=$IR"; grep -iE "msg|messages|round|MB" $OUT/bench.txt | head -5
RT=$(grep -m1 "round trips" $OUT/bench.txt | awk '{print $3}')
[ -n "$RT" ] && echo "$LABEL Ir/round-trip=$((IR / RT))"
