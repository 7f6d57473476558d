#!/bin/bash
# The pair key's cost on one node (docs/scale.md), run by hand, never in CI.
#
# Leaks/groups latency with the real pair keys, then with every key 0 (the join by
# endpoint alone, as before the key), then every key erased and filled again by a
# second collector's start-up backfill task (timed), then keyed again. Against the
# database of `finwait-bench history --keep`, while it serves:
#
#   finwait-bench history --hosts 500 --queries leaks,groups,who,who-at --dir DIR --keep
#   bench/scripts/pair_key_cost.sh API_URL DATABASE_URL COLLECTOR_BINARY
#
# with the API and database URLs it prints (API_URL without /leaks). It rewrites the
# keys of the kept database; stop the bench with Ctrl-C afterwards.
set -u
if [ $# -ne 3 ]; then
  echo "usage: $0 API_URL DATABASE_URL COLLECTOR_BINARY" >&2
  exit 2
fi
API=$1
DB=$2
COLLECTOR=$3
PSQL="/usr/lib/postgresql/15/bin/psql -qAtX $DB"
time_q() { # label path runs
  local out=()
  for i in $(seq 1 $3); do
    out+=($(curl -s -o /dev/null -w '%{time_total}' "$API/$2"))
  done
  printf '%s\n' "${out[@]}" | sort -n | awk -v l="$1" '{a[NR]=$1} END {printf "%s p50 %.1f ms (n=%d)\n", l, a[int((NR+1)/2)]*1000, NR}'
}
round() {
  for r in 1 2; do
    time_q "$1 leaks" "leaks?since=24h" 15
    time_q "$1 groups" "leaks/groups?since=24h" 15
  done
}
round keyed
$PSQL -c "UPDATE current_sockets SET pair_key = 0" -c "UPDATE socket_lifetimes SET pair_key = 0" -c "VACUUM ANALYZE current_sockets" -c "VACUUM ANALYZE socket_lifetimes"
round vacuous
$PSQL -c "SELECT count(*) FROM socket_lifetimes"
$PSQL -c "UPDATE current_sockets SET pair_key = NULL" -c "UPDATE socket_lifetimes SET pair_key = NULL" -c "DELETE FROM rollups WHERE name = 'pair_key_backfill'" -c "VACUUM ANALYZE current_sockets" -c "VACUUM ANALYZE socket_lifetimes"
work=$(mktemp -d)
echo "$DB" > "$work/url"
start=$(date +%s.%N)
"$COLLECTOR" --insecure-loopback --listen 127.0.0.1:0 --no-reports \
  --database-url-file "$work/url" > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 1 1800); do
  grep -q "pair keys filled\|backfill stopped" "$work/log" && break
  sleep 1
done
end=$(date +%s.%N)
kill -TERM $pid; wait $pid
grep "pair keys filled\|backfill stopped" "$work/log"
rm -rf "$work"
echo "backfill wall time (incl. collector start): $(echo "$end - $start" | bc) s"
$PSQL -c "SELECT count(*) FILTER (WHERE pair_key IS NULL), count(*) FROM socket_lifetimes"
$PSQL -c "VACUUM ANALYZE current_sockets" -c "VACUUM ANALYZE socket_lifetimes"
round keyed-after-backfill
