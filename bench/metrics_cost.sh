#!/usr/bin/env bash
# bench/metrics_cost.sh (root): the agent's cost with and without --metrics-listen.
# 10,000 sockets (finwait-sockpop bulk) in a private netns, the debug collector with
# its embedded PostgreSQL, the release agent at a 0.2 s interval for 40 s, twice each
# way, interleaved; with metrics on, a scrape every 0.2 s. Prints peak RSS and CPU.
# Needs: cargo build --workspace --bins && cargo build --release -p finwait-agent
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}
NS=mmeas$$
ip netns add $NS; trap 'ip netns del $NS 2>/dev/null || true' EXIT
ip -n $NS link set lo up
D=$(mktemp -d /tmp/mmeas.XXXX); chmod 755 $D
exec 3> >(ip netns exec $NS $T/debug/finwait-sockpop bulk --sockets 10000 --max-seconds 600 > $D/pop.json)
sleep 8
ip netns exec $NS $T/debug/finwait-collector --insecure-loopback --listen 127.0.0.1:0 --data-dir $D/data > $D/col.out 2> $D/col.log &
CPID=$!
for i in $(seq 1 120); do grep -q "listening on" $D/col.out && break; sleep 0.5; done
ADDR=$(awk '/listening on/{print $NF}' $D/col.out)
run() { # $1 = on|off
  local extra=() ; [ "$1" = on ] && extra=(--metrics-listen 127.0.0.1:0)
  ip netns exec $NS $T/release/finwait-agent run --insecure-loopback --collector http://$ADDR --interval 0.2 --hostname meas-$1 --spool-dir $D/spool-$1 "${extra[@]}" > $D/ag-$1.out 2> $D/ag-$1.log &
  local AP=$!
  sleep 1
  local MA=$(awk '/listening on/{print $NF}' $D/ag-$1.out 2>/dev/null || true)
  local scrapes=0
  local end=$((SECONDS+40))
  while [ $SECONDS -lt $end ]; do
    if [ "$1" = on ] && [ -n "$MA" ]; then ip netns exec $NS curl -s -m 2 http://$MA/metrics > $D/last-$1.metrics && scrapes=$((scrapes+1)); fi
    sleep 0.2
  done
  local apid=$(pgrep -P $AP -f "finwait-agent run" || echo $AP)
  local hwm=$(awk '/VmHWM/{print $2}' /proc/$apid/status)
  local cpu=$(awk '{print ($14+$15)/100}' /proc/$apid/stat)
  echo "metrics=$1 peak_rss_kib=$hwm cpu_s=$cpu scrapes=$scrapes"
  if [ "$1" = on ]; then grep -E "^finwait_agent_(cycle_seconds_(sum|count)|sockets|cycles_total)" $D/last-on.metrics; fi
  kill $apid; sleep 2
}
run off
run on
run off
run on
kill $CPID; sleep 4; exec 3>&-
rm -rf $D
