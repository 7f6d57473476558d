-- A synthetic fleet's history for `finwait-bench history`, written straight into the
-- collector's schema. Run step by step (each `-- step:` block is one round trip, timed)
-- on one connection, after the bench filled the temporary table `gen` with its flags:
--   gen(hosts, hours, cph, leaky, leaks_per, t_now)
-- Everything is derived from host numbers through pg_temp.hm (a hash), so the same
-- flags give the same data. Addresses are data only: 10.16.0.0/12 and fd00:0:0:10::/64
-- for hosts, 10.96.0.0/16 for service VIPs, 10.200.0.0/16 for clients without an agent.
--
-- Host n has role (n-1) % 4: 0 web (nginx :443, client of the apps), 1 db (postgres
-- :5432), 2 cache (redis :6379) — 1 and 2 run a python job calling the webs — and
-- 3 app (java :8080, client of db and cache). A few apps run `leaky-svc` instead: it
-- never closes upstream connections its nginx clients closed (CLOSE_WAIT on the app,
-- orphaned or half-closed FIN_WAIT2 on the web host).
--
-- sock_key layout (unique per host, as the primary key of current_sockets needs):
--   n·2^32 + 4j + side              history connection j of client host n
--   n·2^32 + 2^31 + 4k + side       current connection k of client host n
--   n·2^32 + 2^31 + 2^29 + 4k + ... current TIME_WAIT / LISTEN
--   n·2^32 + 3·2^30 + 4k + part     leak k of leaky host n

-- step: functions
CREATE FUNCTION pg_temp.hm(x bigint, m integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ((hashint8(x) & 2147483647) % m)::integer $$;
CREATE FUNCTION pg_temp.secs(s double precision) RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT s * interval '1 second' $$;

-- step: partitions
-- Daily partitions over the whole history, named as the collector's own maintenance
-- names them (it creates yesterday to two days ahead; older days are ours to add).
DO $$
DECLARE
    d date;
    t text;
    lo date;
    hi date;
BEGIN
    SELECT ((t_now - make_interval(hours => hours)) AT TIME ZONE 'UTC')::date,
           (t_now AT TIME ZONE 'UTC')::date
      INTO lo, hi FROM gen;
    FOR d IN SELECT generate_series(lo, hi, interval '1 day')::date LOOP
        FOREACH t IN ARRAY ARRAY['socket_lifetimes', 'state_counts', 'time_wait_counts'] LOOP
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           t || '_p' || to_char(d, 'YYYYMMDD'), t, d::text, (d + 1)::text);
        END LOOP;
    END LOOP;
END $$;

-- step: hosts
INSERT INTO hosts (machine_id, hostname, boot_id, labels, agent_version, ephemeral_low,
                   ephemeral_high, fin_timeout_s, sample_interval_ms, first_seen, last_report,
                   last_epoch, last_seq, live_instance, live_until)
SELECT md5('machine-' || n), 'host-' || lpad(n::text, greatest(4, length(n::text)), '0'),
       md5('boot-' || n),
       jsonb_build_object('role', (ARRAY['web', 'db', 'cache', 'app'])[1 + (n - 1) % 4],
                          'zone', 'zone-' || n % 3),
       '0.1.0', 32768, 60999, 60, 10000, g.t_now - make_interval(hours => g.hours), g.t_now,
       1, g.hours * 60, 'bench-' || n,
       -- a lease far ahead: the collector's silent-agent sweep must leave them alone
       g.t_now + interval '7 days'
FROM gen g, generate_series(1, g.hosts) n;

-- step: fleet
CREATE TEMP TABLE roles (role, port, scomm, scmd, suid, ccomm, ccmd, cuid, cnt) AS
SELECT r.role, r.port, r.scomm, r.scmd, r.suid, r.ccomm, r.ccmd, r.cuid,
       (g.hosts - 1 - r.role) / 4 + 1
FROM gen g, (VALUES
    (0, 443, 'nginx', 'nginx: worker process', 33, 'nginx', 'nginx: worker process', 33),
    (1, 5432, 'postgres', 'postgres: 15/main: app appdb idle', 105,
        'python3', '/usr/bin/python3 /opt/jobs/report.py --every 60', 1000),
    (2, 6379, 'redis-server', '/usr/bin/redis-server 0.0.0.0:6379', 106,
        'python3', '/usr/bin/python3 /opt/jobs/warm_cache.py', 1000),
    (3, 8080, 'java', '/usr/bin/java -Xmx4g -jar /srv/app/service.jar --port 8080', 1000,
        'java', '/usr/bin/java -Xmx4g -jar /srv/app/service.jar --port 8080', 1000)
) r(role, port, scomm, scmd, suid, ccomm, ccmd, cuid);

CREATE TEMP TABLE fh AS
WITH n AS (
    SELECT n::bigint AS n, (n - 1) % 4 AS role, (n - 1) / 4 AS j FROM gen, generate_series(1, gen.hosts) n
), step AS (
    SELECT greatest(1, r.cnt / greatest(1, g.leaky)) AS step FROM roles r, gen g WHERE r.role = 3
)
SELECT h.host_id, n.n, n.role, r.port, r.suid, r.cuid,
       '10.16.0.0'::inet + n.n AS v4, 'fd00:0:0:10::'::inet + n.n AS v6,
       n.role = 3 AND n.j % s.step = 0 AND n.j / s.step < g.leaky AS leaky,
       CASE WHEN n.role = 3 AND n.j % s.step = 0 AND n.j / s.step < g.leaky
            THEN jsonb_build_object('pid', 2000 + pg_temp.hm(n.n, 30000), 'comm', 'leaky-svc',
                                    'cmdline', '/opt/leaky/bin/leaky-svc --listen :8080 --upstream-pool 64',
                                    'service', 'leaky-svc.service')
            ELSE jsonb_build_object('pid', 2000 + pg_temp.hm(n.n, 30000), 'comm', r.scomm, 'cmdline', r.scmd,
                                    'service', r.scomm || '.service')
       END AS srv_owner,
       CASE WHEN n.role = 3 THEN NULL ELSE
            jsonb_build_object('pid', 40000 + pg_temp.hm(n.n, 20000), 'comm', r.ccomm, 'cmdline', r.ccmd,
                               'service', r.ccomm || '.service')
       END AS cli_owner0
FROM n JOIN roles r USING (role)
     JOIN hosts h ON h.hostname = 'host-' || lpad(n.n::text, greatest(4, length(n.n::text)), '0'),
     step s, gen g;
-- An app is its own client (same process); everyone else runs a separate one.
ALTER TABLE fh ADD COLUMN cli_owner jsonb;
UPDATE fh SET cli_owner = coalesce(cli_owner0, srv_owner);
CREATE UNIQUE INDEX ON fh (n);
ANALYZE fh;
ANALYZE roles;

-- step: current
-- Open connections: each host is the client of 20-100 (to a host of its target role),
-- so with the incoming ones every host holds roughly 40-200 ESTABLISHED, both ends
-- present with reversed tuples; 1 in 8 over IPv6.
INSERT INTO current_sockets (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen)
SELECT v.host_id, 4026531840, v.key, v.key, 1, v.la, v.lp, v.ra, v.rp,
       (v.key & 2147483647) + 1, v.uid, 0, x.txq, 2, v.owners, x.first_seen
FROM (
    SELECT c.host_id AS chost, s.host_id AS shost,
           c.n::bigint * 4294967296 + 2147483648 + k * 4 AS key,
           CASE WHEN pg_temp.hm(c.n * 31 + k, 8) = 0 THEN c.v6 ELSE c.v4 END AS ca,
           32768 + (pg_temp.hm(c.n, 28232) + k * 7919) % 28232 AS cp,
           CASE WHEN pg_temp.hm(c.n * 31 + k, 8) = 0 THEN s.v6 ELSE s.v4 END AS sa,
           s.port AS sp, c.cuid, s.suid, c.cli_owner, s.srv_owner, k,
           CASE WHEN pg_temp.hm(c.n * 17 + k, 10) = 0 THEN 1448 * pg_temp.hm(c.n + k, 20) ELSE 0 END AS txq,
           g.t_now - pg_temp.secs(CASE WHEN k % 2 = 0 THEN pg_temp.hm(c.n * 7 + k, 600)
                                       ELSE pg_temp.hm(c.n * 7 + k, g.hours * 3600) END) AS first_seen
    FROM gen g, fh c
         CROSS JOIN LATERAL generate_series(1, 20 + pg_temp.hm(c.n, 81)) k
         JOIN roles tr ON tr.role = CASE c.role WHEN 0 THEN 3 WHEN 3 THEN 1 + k % 2 ELSE 0 END
         JOIN fh s ON s.n = 1 + tr.role + 4 * pg_temp.hm(c.n * 100003 + k, tr.cnt)
    OFFSET 0 -- computed once per connection, not once per reference below
) x CROSS JOIN LATERAL (VALUES
    (x.chost, x.key, x.ca, x.cp, x.sa, x.sp, x.cuid,
     jsonb_build_array(x.cli_owner || jsonb_build_object('fd', 20 + x.k))),
    (x.shost, x.key + 1, x.sa, x.sp, x.ca, x.cp, x.suid,
     jsonb_build_array(x.srv_owner || jsonb_build_object('fd', 20 + x.key % 4000)))
) v(host_id, key, la, lp, ra, rp, uid, owners);

-- Recently closed client connections (TIME_WAIT, 5-30 per host) and listeners.
INSERT INTO current_sockets (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen)
SELECT c.host_id, 4026531840, c.n::bigint * 4294967296 + 2147483648 + 536870912 + k * 4,
       NULL, 6, c.v4, 32768 + (pg_temp.hm(c.n, 28232) + (k + 500) * 7919) % 28232,
       s.v4, s.port, 0, 0, 0, 0, 3, '[]'::jsonb,
       g.t_now - pg_temp.secs(pg_temp.hm(c.n * 13 + k, 60))
FROM gen g, fh c
     CROSS JOIN LATERAL generate_series(1, 5 + pg_temp.hm(c.n * 3, 26)) k
     JOIN roles tr ON tr.role = CASE c.role WHEN 0 THEN 3 WHEN 3 THEN 1 + k % 2 ELSE 0 END
     JOIN fh s ON s.n = 1 + tr.role + 4 * pg_temp.hm(c.n * 100019 + k, tr.cnt);

INSERT INTO current_sockets (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen)
SELECT f.host_id, 4026531840, f.n::bigint * 4294967296 + 2147483648 + 536870912 + 400000 + l.i,
       f.n::bigint * 4294967296 + 2147483648 + 536870912 + 400000 + l.i, 10,
       l.la, l.lp, l.ra, 0, 10000 + l.i, l.uid, 0, 0, 0, l.owners, g.t_now - make_interval(hours => g.hours)
FROM gen g, fh f CROSS JOIN LATERAL (VALUES
    (1, '0.0.0.0'::inet, 22, '0.0.0.0'::inet, 0,
        '[{"pid": 812, "fd": 3, "comm": "sshd", "cmdline": "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"}]'::jsonb),
    (2, '::'::inet, 22, '::'::inet, 0,
        '[{"pid": 812, "fd": 4, "comm": "sshd", "cmdline": "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"}]'::jsonb),
    (3, '0.0.0.0'::inet, 9100, '0.0.0.0'::inet, 65534,
        '[{"pid": 901, "fd": 3, "comm": "node_exporter", "cmdline": "/usr/bin/prometheus-node-exporter"}]'::jsonb),
    (4, '0.0.0.0'::inet, f.port, '0.0.0.0'::inet, f.suid, jsonb_build_array(f.srv_owner || '{"fd": 6}'::jsonb)),
    (5, '::'::inet, f.port, '::'::inet, f.suid, jsonb_build_array(f.srv_owner || '{"fd": 7}'::jsonb))
) l(i, la, lp, ra, uid, owners);

-- step: history
-- Ended lifetimes of short connections: `cph` per client host and hour, spread over
-- the window. ESTABLISHED for 1-300 s (1 in 20 for 5-60 min) on both ends, then the
-- client closes: TIME_WAIT for 60 s on the client. 1 in 10 servers are slow to close:
-- a CLOSE_WAIT of 1-9 s on the server against a FIN_WAIT2 on the client first (far
-- below any leak threshold, but the same states the leak search has to sift through).
INSERT INTO socket_lifetimes (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen,
    last_seen, end_reason)
SELECT v.host_id, 4026531840, v.key, v.key, v.state, v.la, v.lp, v.ra, v.rp,
       CASE WHEN v.state = 6 THEN 0 ELSE (v.key & 2147483647) + 1 END, v.uid, 0, 0, v.timer,
       v.owners, v.t1, v.t2, v.reason
FROM (
    SELECT c.host_id AS chost, s.host_id AS shost, c.n::bigint * 4294967296 + j * 4 AS key,
           CASE WHEN pg_temp.hm(c.n * 37 + j, 8) = 0 THEN c.v6 ELSE c.v4 END AS ca,
           32768 + (pg_temp.hm(c.n, 28232) + (j + 5000) * 7919) % 28232 AS cp,
           CASE WHEN pg_temp.hm(c.n * 37 + j, 8) = 0 THEN s.v6 ELSE s.v4 END AS sa,
           s.port AS sp, c.cuid, s.suid, c.cli_owner, s.srv_owner, j,
           t.t0, t.t0 + pg_temp.secs(t.est) AS t1,
           t.t0 + pg_temp.secs(t.est + t.slow) AS t2, t.slow
    FROM gen g, fh c
         CROSS JOIN LATERAL generate_series(1, g.cph * g.hours) j
         CROSS JOIN LATERAL (SELECT
             g.t_now - make_interval(hours => g.hours)
                 + pg_temp.secs((j - 1) * 3600.0 / g.cph + pg_temp.hm(c.n * 1000003 + j, greatest(1, 3600 / g.cph))) AS t0,
             CASE WHEN pg_temp.hm(c.n * 1009 + j, 20) = 0 THEN 300 + pg_temp.hm(c.n * 1013 + j, 3300)
                  ELSE 1 + pg_temp.hm(c.n * 1013 + j, 300) END AS est,
             CASE WHEN pg_temp.hm(c.n * 1019 + j, 10) = 0 THEN 1 + pg_temp.hm(c.n * 1021 + j, 9) ELSE 0 END AS slow
         ) t
         JOIN roles tr ON tr.role = CASE c.role WHEN 0 THEN 3 WHEN 3 THEN 1 + j % 2 ELSE 0 END
         JOIN fh s ON s.n = 1 + tr.role + 4 * pg_temp.hm(c.n * 100043 + j, tr.cnt)
    WHERE t.t0 + pg_temp.secs(t.est + t.slow + 60) <= g.t_now
    OFFSET 0 -- computed once per connection, not once per reference below
) x CROSS JOIN LATERAL (VALUES
    (x.chost, x.key, 1::smallint, x.ca, x.cp, x.sa, x.sp, x.cuid, 2::smallint,
     jsonb_build_array(x.cli_owner || jsonb_build_object('fd', 20 + x.j % 1000)), x.t0, x.t1, 2::smallint),
    (x.shost, x.key + 1, 1::smallint, x.sa, x.sp, x.ca, x.cp, x.suid, 2::smallint,
     jsonb_build_array(x.srv_owner || jsonb_build_object('fd', 20 + x.j % 4000)), x.t0, x.t1, 2::smallint),
    (x.chost, x.key, CASE WHEN x.slow > 0 THEN 5::smallint END, x.ca, x.cp, x.sa, x.sp, x.cuid, 3::smallint,
     '[]'::jsonb, x.t1, x.t2, 2::smallint),
    (x.shost, x.key + 1, CASE WHEN x.slow > 0 THEN 8::smallint END, x.sa, x.sp, x.ca, x.cp, x.suid, 0::smallint,
     jsonb_build_array(x.srv_owner || jsonb_build_object('fd', 20 + x.j % 4000)), x.t1, x.t2, 1::smallint),
    (x.chost, x.key, 6::smallint, x.ca, x.cp, x.sa, x.sp, 0, 3::smallint,
     '[]'::jsonb, x.t2, x.t2 + interval '60 seconds', 1::smallint)
) v(host_id, key, state, la, lp, ra, rp, uid, timer, owners, t1, t2, reason)
WHERE v.state IS NOT NULL;

-- step: leaks
-- `leaks_per` leaked connections on each leaky app (kind = k % 16):
--   0-7   open CLOSE_WAIT, the web's orphaned FIN_WAIT2 expired after 60 s   exact
--   8-9   open CLOSE_WAIT, the web still holds a half-closed FIN_WAIT2 open  exact
--   10-12 CLOSE_WAIT that ended (process restarted), peer expired           exact, ended
--   13    open CLOSE_WAIT from a client without an agent                    one_sided
--   14    ended CLOSE_WAIT whose peer's FIN_WAIT2 was never sampled          one_sided
--   15    open CLOSE_WAIT through a VIP: the web talked to 10.96.x.x:443     nat
-- kinds 4 and 5 over IPv6; each leak is preceded by ESTABLISHED on both ends.
CREATE TEMP TABLE lk AS
SELECT s.host_id AS shost, s.n AS sn, c.host_id AS chost, c.n AS cn, k, k % 16 AS kind,
       s.srv_owner, s.suid, c.cli_owner, c.cuid,
       CASE WHEN k % 16 IN (4, 5) THEN s.v6 ELSE s.v4 END AS sa,
       CASE WHEN k % 16 IN (4, 5) THEN c.v6
            WHEN k % 16 = 13 THEN '10.200.0.0'::inet + (s.l * 64 + k % 64)
            ELSE c.v4 END AS ca,
       32768 + (pg_temp.hm(c.n, 28232) + 14000 + (s.l * g.leaks_per + k) * 7919) % 28232 AS cp,
       CASE WHEN k % 16 = 15 THEN '10.96.0.0'::inet + (s.l + 1) END AS vip,
       s.n::bigint * 4294967296 + 3221225472 + k * 4 AS key,
       g.t_now - pg_temp.secs(660 + pg_temp.hm(s.n * 7777 + k, greatest(1, g.hours * 3600 - 7200))) AS cw_start,
       10 + pg_temp.hm(s.n * 7789 + k, 1800) AS est,
       600 + pg_temp.hm(s.n * 7793 + k, 5 * 3600) AS len,
       g.t_now
FROM gen g,
     (SELECT f.*, row_number() OVER (ORDER BY f.n) - 1 AS l FROM fh f WHERE f.leaky) s
     CROSS JOIN LATERAL generate_series(0, g.leaks_per - 1) k
     JOIN roles r0 ON r0.role = 0
     JOIN fh c ON c.n = 1 + 4 * pg_temp.hm(s.n * 7 + k, r0.cnt);
ALTER TABLE lk ADD COLUMN cw_end timestamptz;
UPDATE lk SET cw_end = least(cw_start + pg_temp.secs(len), t_now - interval '60 seconds');

-- Open ends: the CLOSE_WAITs still held, and the half-closed FIN_WAIT2s.
INSERT INTO current_sockets (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen)
SELECT shost, 4026531840, key, key, 8, sa, 8080, ca, cp, (key & 2147483647) + 1, suid,
       CASE WHEN k % 3 = 0 THEN 517 ELSE 0 END, 0, 0,
       jsonb_build_array(srv_owner || jsonb_build_object('fd', 100 + k)), cw_start
FROM lk WHERE kind NOT IN (10, 11, 12, 14)
UNION ALL
SELECT chost, 4026531840, key + 1, key + 1, 5, ca, cp, sa, 8080, (key & 2147483647) + 2, cuid,
       0, 0, 0, jsonb_build_array(cli_owner || jsonb_build_object('fd', 300 + k)),
       cw_start + pg_temp.secs(pg_temp.hm(key, 10))
FROM lk WHERE kind IN (8, 9);

-- Ended ends: CLOSE_WAITs that ended, the peers' orphaned FIN_WAIT2s, and the
-- ESTABLISHED lifetimes that came before.
INSERT INTO socket_lifetimes (host_id, netns, sock_key, cookie, state, local_addr, local_port,
    remote_addr, remote_port, inode, uid, rx_queue, tx_queue, timer, owners, first_seen,
    last_seen, end_reason)
SELECT shost, 4026531840, key, key, 8, sa, 8080, ca, cp, (key & 2147483647) + 1, suid, 0, 0, 0,
       jsonb_build_array(srv_owner || jsonb_build_object('fd', 100 + k)), cw_start, cw_end, 1
FROM lk WHERE kind IN (10, 11, 12, 14)
UNION ALL
SELECT chost, 4026531840, key + 1, key + 1, 5, ca, cp, coalesce(vip, sa),
       CASE WHEN vip IS NULL THEN 8080 ELSE 443 END, 0, 0, 0, 0, 3, '[]'::jsonb,
       cw_start + pg_temp.secs(pg_temp.hm(key, 10)), cw_start + interval '60 seconds', 1
FROM lk WHERE kind NOT IN (8, 9, 13, 14)
UNION ALL
SELECT shost, 4026531840, key, key, 1, sa, 8080, ca, cp, (key & 2147483647) + 1, suid, 0, 0, 2,
       jsonb_build_array(srv_owner || jsonb_build_object('fd', 100 + k)),
       cw_start - pg_temp.secs(est), cw_start - interval '10 seconds', 2
FROM lk
UNION ALL
SELECT chost, 4026531840, key + 1, key + 1, 1, ca, cp, coalesce(vip, sa),
       CASE WHEN vip IS NULL THEN 8080 ELSE 443 END, (key & 2147483647) + 2, cuid, 0, 0, 2,
       jsonb_build_array(cli_owner || jsonb_build_object('fd', 300 + k)),
       cw_start - pg_temp.secs(est), cw_start - interval '10 seconds', 2
FROM lk WHERE kind <> 13;

-- step: counts
-- Per-minute state counts of every host (the agents' per-cycle counts, thinned to one a
-- minute): ESTABLISHED with a daily wave, LISTEN, TIME_WAIT, and CLOSE_WAIT where
-- there is any (growing on leaky apps, now and then a brief one elsewhere).
INSERT INTO state_counts (host_id, ts, netns, state, count)
SELECT f.host_id, m.ts, 4026531840, v.state, v.count
FROM gen g, fh f
     CROSS JOIN LATERAL (SELECT ts, row_number() OVER () AS i
                         FROM generate_series(g.t_now - make_interval(hours => g.hours) + interval '60 seconds',
                                              g.t_now, interval '60 seconds') ts) m
     CROSS JOIN LATERAL (VALUES
         (1::smallint, (60 + pg_temp.hm(f.n, 100) + 30 * sin(2 * pi() * m.i / 1440.0))::integer),
         (6::smallint, 5 + pg_temp.hm(f.n * 1440 + m.i, 26)),
         (10::smallint, 5),
         (8::smallint, CASE WHEN f.leaky THEN (g.leaks_per * m.i / (g.hours * 60))::integer
                            WHEN pg_temp.hm(f.n * 1441 + m.i, 10) = 0 THEN 1 ELSE 0 END)
     ) v(state, count)
WHERE v.count > 0;

-- One TIME_WAIT summary a minute per host (its busiest server) and one ledger row a
-- minute per host, so `at=` finds the host's report at or before any instant.
INSERT INTO time_wait_counts (host_id, ts, netns, local_addr, remote_addr, remote_port, count)
SELECT f.host_id, ts, 4026531840, f.v4, s.v4, s.port, 5 + pg_temp.hm(f.n * 7 + extract(epoch FROM ts)::bigint, 26)
FROM gen g, fh f
     JOIN roles tr ON tr.role = CASE f.role WHEN 0 THEN 3 WHEN 3 THEN 1 ELSE 0 END
     JOIN fh s ON s.n = 1 + tr.role + 4 * pg_temp.hm(f.n, tr.cnt)
     CROSS JOIN LATERAL generate_series(g.t_now - make_interval(hours => g.hours) + interval '60 seconds',
                                        g.t_now, interval '60 seconds') ts;

INSERT INTO ingest_batches (host_id, epoch, seq, full_table, taken_at, committed_at, sockets)
SELECT f.host_id, 1, m.i, m.i = 1, m.ts, m.ts + interval '40 milliseconds',
       CASE WHEN m.i = 1 THEN 150 ELSE pg_temp.hm(f.n * 1447 + m.i, 12) END
FROM gen g, fh f
     CROSS JOIN LATERAL (SELECT ts, row_number() OVER () AS i
                         FROM generate_series(g.t_now - make_interval(hours => g.hours) + interval '60 seconds',
                                              g.t_now, interval '60 seconds') ts) m;

-- step: rollup
-- What the collector keeps up to date as batches arrive: each host's counts at its last
-- report on its row, and the once-a-minute fleet rollup (the dashboard's charts read
-- it): per-minute totals of the hosts' counts, every host reporting, and the
-- CLOSE_WAIT count as open leaks.
UPDATE hosts h SET states = s.states
FROM (SELECT sc.host_id, jsonb_object_agg(sc.state, sc.n) AS states
      FROM (SELECT c.host_id, c.state, sum(c.count)::bigint AS n
            FROM state_counts c JOIN hosts hh ON hh.host_id = c.host_id AND c.ts = hh.last_report
            GROUP BY 1, 2) sc
      GROUP BY sc.host_id) s
WHERE s.host_id = h.host_id;

INSERT INTO fleet_minutes (ts, states, hosts_reporting, hosts_silent, open_leaks)
SELECT m.ts, jsonb_object_agg(m.state, m.n), (SELECT count(*) FROM hosts), 0,
       COALESCE(sum(m.n) FILTER (WHERE m.state = 8), 0)
FROM (SELECT date_trunc('minute', sc.ts) AS ts, sc.state, sum(sc.count)::bigint AS n
      FROM state_counts sc GROUP BY 1, 2) m
GROUP BY m.ts;

-- The maintenance task's hourly per-state peaks (reports draw daily peaks from them),
-- rolled up to ten minutes ago like the collector does.
INSERT INTO state_hours (hour, host_id, state, peak)
SELECT date_trunc('hour', s.ts), s.host_id, s.state, max(s.total)
FROM (SELECT host_id, ts, state, sum(count)::integer AS total FROM state_counts
      WHERE ts < date_trunc('hour', now() - interval '10 minutes')
      GROUP BY host_id, ts, state) s
GROUP BY 1, 2, 3;
INSERT INTO rollups (name, until) VALUES ('state_hours', date_trunc('hour', now() - interval '10 minutes'))
ON CONFLICT (name) DO UPDATE SET until = EXCLUDED.until;

-- Pair keys as the collector's inserts compute them (migration 20261203000001).
UPDATE current_sockets
SET pair_key = finwait_pair_key(host_id, netns, state, local_addr, local_port, remote_addr, remote_port);
UPDATE socket_lifetimes
SET pair_key = finwait_pair_key(host_id, netns, state, local_addr, local_port, remote_addr, remote_port);
