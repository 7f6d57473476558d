-- The fleet over time: per bucket of $3 seconds from $1 to $2, the last recorded minute.
SELECT DISTINCT ON (date_bin($3 * interval '1 second', f.ts, $1))
       date_bin($3 * interval '1 second', f.ts, $1) AS t, f.states, f.hosts_reporting,
       f.hosts_silent, f.open_leaks
FROM fleet_minutes f
WHERE f.ts >= $1 AND f.ts < $2
ORDER BY date_bin($3 * interval '1 second', f.ts, $1), f.ts DESC
