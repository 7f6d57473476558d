//! The pair key (migration 20261203000001, docs/scale.md) changes no answer. A rich
//! scene is ingested through the real stream (so the keys are the ones the collector's
//! inserts compute): exact pairs (IPv4, IPv6, ended, born of a state change), NAT pairs
//! (the client's and the server's side translated), one-sided, a same-host loopback
//! pair beside another host's identical loopback endpoint, half-closed FIN_WAIT2 (with
//! and without a CLOSE_WAIT peer), LAST_ACK, TIME_WAIT. Then every question is asked
//! over HTTP and must answer the same
//! - with the key's comparison made vacuous (every key 0: the join by endpoint alone,
//!   as before the migration);
//! - after every key is erased and filled again by the backfill (rows written before
//!   the migration), which must compute the keys the inserts wrote;
//!
//! and the correlation SQL as it was before the key (kept verbatim in
//! `reference/leaks_by_endpoint.sql`) must return the rows the current SQL returns for
//! a grid of parameters. A key that put a pair's two ends apart fails all three.

use chrono::{TimeZone, Utc};
use finwait_collector::config::Config;
use finwait_proto::v1 as pb;
use finwait_proto::v1::collector_message::Body;
use pb::TcpState::{CloseWait, Established, FinWait2, LastAck, TimeWait};
use sqlx::PgPool;

use crate::nsclient::http_get;
use crate::support::{AgentStream, Collector, delta, full, identity, now_ms, socket as s, stable};

const SRV: [u8; 4] = [10, 2, 0, 1];
const CLI: [u8; 4] = [10, 2, 0, 2];
const NATCLI: [u8; 4] = [10, 2, 0, 3];
const VIP: [u8; 4] = [10, 96, 0, 1];
const SNAT: [u8; 4] = [10, 96, 5, 5];
const LO: [u8; 4] = [127, 0, 0, 1];
const UNSEEN: [u8; 4] = [10, 9, 9, 9];

fn ok(b: Body) {
    assert!(matches!(b, Body::Ack(_)), "{b:?}");
}

/// An IPv6 socket fd00::l:lport -> fd00::r:rport.
fn s6(
    cookie: u64,
    state: pb::TcpState,
    l: (u8, u32),
    r: (u8, u32),
    pid: Option<u32>,
) -> pb::Socket {
    let mut x = s(cookie, state, ([0; 4], l.1), ([0; 4], r.1), pid, None);
    let v6 = |last: u8| {
        let mut a = vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[15] = last;
        a
    };
    x.local.as_mut().expect("local").addr = v6(l.0);
    x.remote.as_mut().expect("remote").addr = v6(r.0);
    x
}

fn tw_group(remote: [u8; 4], port: u32, count: u32) -> pb::TimeWaitGroup {
    pb::TimeWaitGroup {
        netns: 1,
        local_addr: CLI.to_vec(),
        remote_addr: remote.to_vec(),
        remote_port: port,
        count,
    }
}

/// The scene, over t0 = now - 600 s (first tables), t1 = t0 + 300 s (deltas: ends,
/// state changes) and t2 = now - 5 s (full tables again); returns t0 in ms and the
/// streams (kept open so the leases hold).
async fn seed(c: &Collector) -> (i64, Vec<AgentStream>) {
    let t0 = now_ms() - 600_000;
    let (t1, t2) = (t0 + 300_000, now_ms() - 5_000);
    let orphan = Some(pb::TimerKind::TimeWait);
    let mut srv = AgentStream::open(c.addr, identity("srv"), 1, "srv", None)
        .await
        .expect("srv");
    let mut cli = AgentStream::open(c.addr, identity("cli"), 1, "cli", None)
        .await
        .expect("cli");
    let mut nat = AgentStream::open(c.addr, identity("natcli"), 1, "natcli", None)
        .await
        .expect("natcli");

    let srv_t0 = vec![
        // exact (ends at t1), DNAT (client sees the VIP), one-sided
        s(1, CloseWait, (SRV, 80), (CLI, 40000), Some(100), None),
        s(2, CloseWait, (SRV, 80), (NATCLI, 41000), Some(100), None),
        s(3, CloseWait, (SRV, 80), (UNSEEN, 43000), Some(100), None),
        // the server closed first, its client was SNATed: the client holds the CLOSE_WAIT
        s(4, FinWait2, (SRV, 81), (SNAT, 6000), None, orphan),
        // the other end of cli's half-closed FIN_WAIT2
        s(5, CloseWait, (SRV, 82), (CLI, 45000), Some(101), None),
        s(6, LastAck, (SRV, 84), (CLI, 47000), Some(101), None),
        // becomes CLOSE_WAIT at t1
        s(7, Established, (SRV, 85), (CLI, 49000), Some(102), None),
        // a same-host pair over loopback
        s(8, CloseWait, (LO, 6379), (LO, 50000), Some(103), None),
        s(9, FinWait2, (LO, 50000), (LO, 6379), Some(104), None),
        s6(10, CloseWait, (1, 80), (2, 40001), Some(100)),
        s(11, Established, (SRV, 86), (CLI, 51000), Some(102), None),
    ];
    let cli_t0 = vec![
        s(21, FinWait2, (CLI, 40000), (SRV, 80), None, orphan),
        s(22, FinWait2, (CLI, 45000), (SRV, 82), Some(200), None),
        s(23, FinWait2, (CLI, 46000), (UNSEEN, 83), Some(200), None),
        s(24, Established, (CLI, 49000), (SRV, 85), Some(201), None),
        // the same loopback endpoints as on srv: must not pair with srv's
        s(25, FinWait2, (LO, 50000), (LO, 6379), Some(202), None),
        s(
            26,
            TimeWait,
            (CLI, 48000),
            (SRV, 80),
            None,
            Some(pb::TimerKind::TimeWait),
        ),
        s6(27, FinWait2, (2, 40001), (1, 80), None),
        s(28, Established, (CLI, 51000), (SRV, 86), Some(201), None),
    ];
    let nat_t0 = vec![
        s(31, FinWait2, (NATCLI, 41000), (VIP, 80), None, orphan),
        s(32, CloseWait, (NATCLI, 42000), (SRV, 81), Some(300), None),
    ];
    let mut b = full(1, 1, t0, srv_t0.clone());
    b.counts.push(pb::StateCount {
        netns: 1,
        state: CloseWait as i32,
        count: 6,
    });
    ok(srv.send(b).await.expect("srv t0"));
    let mut b = full(1, 1, t0, cli_t0.clone());
    b.time_wait = vec![tw_group(SRV, 80, 1), tw_group(UNSEEN, 83, 20_000)];
    ok(cli.send(b).await.expect("cli t0"));
    ok(nat
        .send(full(1, 1, t0, nat_t0.clone()))
        .await
        .expect("nat t0"));

    // t1: the exact leak ends (its process closed), its orphaned peer expired; the
    // ESTABLISHED connection on :85 half-closes the leaky way.
    ok(srv
        .send(delta(
            1,
            2,
            t1,
            vec![],
            vec![s(7, CloseWait, (SRV, 85), (CLI, 49000), Some(102), None)],
            vec![1],
        ))
        .await
        .expect("srv t1"));
    ok(cli
        .send(delta(
            1,
            2,
            t1,
            vec![],
            vec![s(24, FinWait2, (CLI, 49000), (SRV, 85), None, orphan)],
            vec![21, 26],
        ))
        .await
        .expect("cli t1"));
    ok(nat
        .send(delta(1, 2, t1, vec![], vec![], vec![]))
        .await
        .expect("nat t1"));

    // t2: full tables; what they leave out ends (the unlisted path).
    let srv_t2: Vec<pb::Socket> = srv_t0
        .into_iter()
        .filter(|x| x.cookie != Some(1) && x.cookie != Some(11))
        .map(|x| {
            if x.cookie == Some(7) {
                s(7, CloseWait, (SRV, 85), (CLI, 49000), Some(102), None)
            } else {
                x
            }
        })
        .collect();
    ok(srv.send(full(1, 3, t2, srv_t2)).await.expect("srv t2"));
    let cli_t2: Vec<pb::Socket> = cli_t0
        .into_iter()
        .filter(|x| ![21, 24, 26, 28].contains(&x.cookie.unwrap_or(0)))
        .collect();
    ok(cli.send(full(1, 3, t2, cli_t2)).await.expect("cli t2"));
    ok(nat.send(full(1, 3, t2, nat_t0)).await.expect("nat t2"));
    (t0, vec![srv, cli, nat])
}

fn rfc(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("instant")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Every question, with the parameters that reach each path of its SQL.
fn questions(t0: i64) -> Vec<String> {
    let (early, mid, late) = (rfc(t0 + 100_000), rfc(t0 + 310_000), rfc(now_ms() - 1_000));
    let mut q = vec![
        "/api/v1/hosts".to_owned(),
        "/api/v1/leaks?since=1h&min_age=0".into(),
        "/api/v1/leaks?since=1h".into(),
        "/api/v1/leaks?since=1h&confidence=nat".into(),
        "/api/v1/leaks?since=1h&confidence=exact".into(),
        "/api/v1/leaks?since=1h&confidence=one_sided".into(),
        "/api/v1/leaks?since=1h&kind=half_closed_wait".into(),
        "/api/v1/leaks?since=1h&kind=last_ack_stuck".into(),
        "/api/v1/leaks?since=1h&host=natcli".into(),
        "/api/v1/leaks?since=1h&limit=2".into(),
        "/api/v1/leaks/groups?since=1h".into(),
        "/api/v1/leaks/groups?since=1h&by=service".into(),
        format!(
            "/api/v1/timeline?host=srv&since={}&until={late}&step=60s",
            rfc(t0)
        ),
        format!("/api/v1/fleet?since={}&until={late}", rfc(t0)),
        "/api/v1/reports".into(),
        format!(
            "/api/v1/reports/run?since={}&window=10m&format=json",
            rfc(t0 - 60_000)
        ),
        format!(
            "/api/v1/reports/run?since={}&window=6m&format=json",
            rfc(t0 - 30_000)
        ),
    ];
    for host in ["srv", "cli", "natcli"] {
        q.push(format!("/api/v1/sockets?host={host}&limit=1000"));
        for at in [&early, &mid, &late] {
            q.push(format!("/api/v1/sockets?host={host}&at={at}&limit=1000"));
        }
    }
    for ep in [
        "10.2.0.1:80",
        "10.2.0.2:40000",
        "10.2.0.3:41000",
        "10.2.0.1:81",
        "127.0.0.1:6379",
        "127.0.0.1:50000",
        "%5Bfd00::1%5D:80",
        "10.2.0.1:85",
    ] {
        q.push(format!("/api/v1/who?endpoint={ep}"));
        for at in [&early, &mid] {
            q.push(format!("/api/v1/who?endpoint={ep}&at={at}"));
        }
    }
    q
}

/// An HTTP/1.1 chunked body's content (sizes count bytes, so bytes are cut, not text).
fn dechunk(raw: &str) -> String {
    let (mut raw, mut out) = (raw.as_bytes(), Vec::new());
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol]).unwrap_or("0");
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let rest = &raw[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        raw = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every question's answer (status and stable JSON), in order.
async fn answers(c: &Collector, qs: &[String]) -> Vec<(String, u16, serde_json::Value)> {
    let addr = c.addr;
    let qs = qs.to_vec();
    tokio::task::spawn_blocking(move || {
        qs.into_iter()
            .map(|q| {
                let (status, head, body) = http_get(addr, &q, std::time::Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("{q}: {e}"));
                let body = if head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
                {
                    dechunk(&body)
                } else {
                    body
                };
                let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                (q, status, stable(v))
            })
            .collect()
    })
    .await
    .expect("questions")
}

fn assert_same(
    what: &str,
    want: &[(String, u16, serde_json::Value)],
    got: &[(String, u16, serde_json::Value)],
) {
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w, g, "{what}: {} answers differently", w.0);
    }
    assert_eq!(want.len(), got.len());
}

/// (host, netns, sock_key, state, pair_key) of every row, open and ended, in order.
async fn keys(db: &PgPool) -> Vec<(i64, i64, i64, i16, Option<i64>)> {
    sqlx::query_as(
        "SELECT host_id, netns, sock_key, state, pair_key FROM current_sockets \
         UNION ALL SELECT host_id, netns, sock_key, state, pair_key FROM socket_lifetimes \
         ORDER BY 1, 2, 3, 4, 5",
    )
    .fetch_all(db)
    .await
    .expect("keys")
}

/// One run of a leaks SQL text with the parameters `p`, as one JSON array.
async fn leaks_rows(db: &PgPool, sql: &str, p: &LeakParams) -> serde_json::Value {
    let wrapped = format!("SELECT COALESCE(json_agg(x), '[]')::text FROM ({sql}) x");
    let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
        .bind(p.since)
        .bind(p.min_age)
        .bind(p.slack)
        .bind(p.host)
        .bind(None::<String>)
        .bind(p.kind)
        .bind(p.confidence)
        .bind(1000i64)
        .bind(0i64)
        .bind(None::<String>)
        .bind(p.until)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("leaks SQL with {p:?}: {e}"));
    serde_json::from_str(&text).expect("json")
}

#[derive(Debug, Clone, Copy)]
struct LeakParams {
    since: chrono::DateTime<Utc>,
    min_age: f64,
    slack: f64,
    host: Option<&'static str>,
    kind: Option<&'static str>,
    confidence: Option<&'static str>,
    until: Option<chrono::DateTime<Utc>>,
}

#[tokio::test]
async fn the_pair_key_changes_no_answer_of_any_question() {
    let c = Collector::start(&["--lease-seconds", "3600", "--leak-threshold-seconds", "30"]).await;
    let (t0, _streams) = seed(&c).await;
    let db = c.db().await;
    let qs = questions(t0);
    let with_keys = answers(&c, &qs).await;

    // The scene reaches every verdict, or equality would prove little.
    for (q, status, body) in &with_keys {
        assert_eq!(*status, 200, "{q}: {body}");
    }
    let all = &with_keys[1].2["leaks"];
    let leaks = all.as_array().expect("leaks");
    let has = |kind: &str, conf: &str, holder_local: &str| {
        leaks.iter().any(|l| {
            l["kind"] == kind
                && l["confidence"] == conf
                && l["holder"]["local"]
                    .as_str()
                    .is_some_and(|x| x == holder_local)
        })
    };
    for (kind, conf, local) in [
        ("close_wait", "exact", "10.2.0.1:80"),
        ("close_wait", "exact", "10.2.0.1:82"),
        ("close_wait", "exact", "10.2.0.1:85"),
        ("close_wait", "exact", "127.0.0.1:6379"),
        ("close_wait", "exact", "[fd00::1]:80"),
        ("close_wait", "nat", "10.2.0.1:80"),
        ("close_wait", "nat", "10.2.0.3:42000"),
        ("close_wait", "one_sided", "10.2.0.1:80"),
        ("half_closed_wait", "one_sided", "10.2.0.2:46000"),
        ("last_ack_stuck", "one_sided", "10.2.0.1:84"),
    ] {
        assert!(
            has(kind, conf, local),
            "no {kind}/{conf} held at {local}: {all:#}"
        );
    }
    assert!(
        leaks.iter().any(|l| !l["until"].is_null()),
        "an ended leak: {all:#}"
    );
    // The loopback pair is srv's own: cli's identical endpoints stay out of it, and
    // the half-closed FIN_WAIT2 whose CLOSE_WAIT peer is seen is no leak of its own.
    for l in leaks {
        if l["holder"]["local"] == "127.0.0.1:6379" {
            assert_eq!(l["peer"]["host"], "srv", "{l:#}");
        }
        assert_ne!(l["holder"]["local"], "10.2.0.2:45000", "{l:#}");
    }

    // 1. The old join path: with every key equal, only the endpoints decide.
    let written = keys(&db).await;
    assert!(written.iter().all(|k| k.4.is_some()), "every row keyed");
    for sql in [
        "UPDATE current_sockets SET pair_key = 0",
        "UPDATE socket_lifetimes SET pair_key = 0",
    ] {
        sqlx::query(sql).execute(&db).await.expect("vacuous keys");
    }
    let by_endpoint = answers(&c, &qs).await;
    assert_same("joined by endpoint alone", &with_keys, &by_endpoint);

    // 2. Rows from before the migration: no key, then the backfill.
    for sql in [
        "UPDATE current_sockets SET pair_key = NULL",
        "UPDATE socket_lifetimes SET pair_key = NULL",
        "DELETE FROM rollups WHERE name = 'pair_key_backfill'",
    ] {
        sqlx::query(sql).execute(&db).await.expect("erase keys");
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let filled =
        finwait_collector::distribution::backfill_pair_keys(&db, std::time::Duration::ZERO, &stop)
            .await
            .expect("backfill");
    assert_eq!(filled as usize, written.len(), "every row filled once");
    assert_eq!(
        keys(&db).await,
        written,
        "the backfill computes the inserts' keys"
    );
    assert!(
        finwait_collector::distribution::backfill_done(&db)
            .await
            .expect("marker")
    );
    let backfilled = answers(&c, &qs).await;
    assert_same("after the backfill", &with_keys, &backfilled);

    // 3. The correlation SQL from before the key, verbatim, against today's.
    let old = include_str!("reference/leaks_by_endpoint.sql");
    let new = include_str!("../../src/sql/leaks.sql");
    assert_ne!(old, new, "the reference is the SQL before the key");
    let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().expect("instant");
    let base = LeakParams {
        since: at(t0 - 3_600_000),
        min_age: 30.0,
        slack: 10.0,
        host: None,
        kind: None,
        confidence: None,
        until: None,
    };
    let mut grid = vec![base];
    for until in [t0 + 100_000, t0 + 299_000, t0 + 310_000, now_ms() - 2_000] {
        grid.push(LeakParams {
            until: Some(at(until)),
            ..base
        });
    }
    for min_age in [0.0, 200.0, 500.0] {
        grid.push(LeakParams { min_age, ..base });
    }
    for slack in [0.0, 400.0] {
        grid.push(LeakParams { slack, ..base });
    }
    for host in ["srv", "cli", "natcli"] {
        grid.push(LeakParams {
            host: Some(host),
            ..base
        });
    }
    for kind in ["close_wait", "half_closed_wait", "last_ack_stuck"] {
        grid.push(LeakParams {
            kind: Some(kind),
            ..base
        });
    }
    for confidence in ["exact", "nat", "one_sided"] {
        grid.push(LeakParams {
            confidence: Some(confidence),
            ..base
        });
    }
    let mut rows = 0;
    for p in &grid {
        let (o, n) = (leaks_rows(&db, old, p).await, leaks_rows(&db, new, p).await);
        assert_eq!(o, n, "leaks.sql before and after the key differ for {p:?}");
        rows += n.as_array().map_or(0, Vec::len);
    }
    assert!(
        rows > grid.len(),
        "the grid's answers are not empty ({rows} rows)"
    );
    db.close().await;
    c.stop().await;
}

#[tokio::test]
async fn citus_is_refused_on_a_database_without_the_citus_extension() {
    let database = crate::support::TestDb::create();
    let args = [
        "finwait-collector",
        "--listen",
        "127.0.0.1:0",
        "--insecure-loopback",
        "--citus",
        "--database-url-file",
        database.url_file_arg(),
    ];
    let config = <Config as clap::Parser>::try_parse_from(args).expect("config");
    let Err(err) = finwait_collector::app::App::build(config).await else {
        panic!("--citus on stock PostgreSQL must fail");
    };
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--citus") && msg.contains("no citus extension"),
        "{msg}"
    );
}

/// A small deterministic generator (xorshift64*), so a failure is reproducible.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An address of every shape PostgreSQL writes differently: IPv4 (loopback or
    /// not), IPv4-mapped, IPv4-compatible, ::1, ::, runs of zero words of every length
    /// and place (ties included), and dense IPv6.
    fn addr(&mut self) -> std::net::IpAddr {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let r = self.next();
        let v4 = Ipv4Addr::from((r >> 32) as u32);
        match r % 8 {
            0 => IpAddr::V4(v4),
            1 => IpAddr::V4(Ipv4Addr::new(
                127,
                (r >> 8) as u8,
                (r >> 16) as u8,
                (r >> 24) as u8,
            )),
            2 => IpAddr::V6(v4.to_ipv6_mapped()),
            3 => IpAddr::V6(v4.to_ipv6_compatible()),
            4 => IpAddr::V6(if r & 16 == 0 {
                Ipv6Addr::LOCALHOST
            } else {
                Ipv6Addr::UNSPECIFIED
            }),
            _ => {
                // Each word zero with probability 1/2, else small or large.
                let mut w = [0u16; 8];
                for x in &mut w {
                    let b = self.next();
                    *x = match b % 4 {
                        0 | 1 => 0,
                        2 => (b >> 8) as u16 % 16,
                        _ => (b >> 8) as u16,
                    };
                }
                IpAddr::V6(Ipv6Addr::from(w))
            }
        }
    }
}

#[tokio::test]
async fn the_collectors_pair_key_is_the_sql_functions_for_every_shape_of_address() {
    // The collector computes the key of a host's first table itself (it copies the rows
    // straight in); the SQL function computes it everywhere else. They must agree.
    let c = Collector::start(&[]).await;
    let db = c.db().await;
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let n = 20_000;
    let (mut host, mut netns, mut state) = (Vec::new(), Vec::new(), Vec::new());
    let (mut la, mut lp, mut ra, mut rp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        host.push((g.next() % 1_000_000) as i64);
        netns.push(4_026_531_840 + (g.next() % 1_000) as i64);
        state.push((1 + i % 11) as i16);
        let l = g.addr();
        // Same-family peers mostly, the other family sometimes; equal ports sometimes.
        let r = if i % 5 == 0 { l } else { g.addr() };
        let p = (g.next() % 65_536) as u16;
        la.push(l);
        ra.push(r);
        lp.push(p);
        rp.push(if i % 7 == 0 {
            p
        } else {
            (g.next() % 65_536) as u16
        });
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT finwait_pair_key(h, n, s, la, lp, ra, rp), host(la) \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::smallint[], $4::inet[], $5::int[], \
                     $6::inet[], $7::int[]) WITH ORDINALITY AS u(h, n, s, la, lp, ra, rp, o) \
         ORDER BY o",
    )
    .bind(&host)
    .bind(&netns)
    .bind(&state)
    .bind(
        la.iter()
            .map(|a| sqlx::types::ipnetwork::IpNetwork::from(*a))
            .collect::<Vec<_>>(),
    )
    .bind(lp.iter().map(|&p| i32::from(p)).collect::<Vec<_>>())
    .bind(
        ra.iter()
            .map(|a| sqlx::types::ipnetwork::IpNetwork::from(*a))
            .collect::<Vec<_>>(),
    )
    .bind(rp.iter().map(|&p| i32::from(p)).collect::<Vec<_>>())
    .fetch_all(&db)
    .await
    .expect("keys from SQL");
    assert_eq!(rows.len(), n);
    let mut wrong = Vec::new();
    for (i, (sql_key, sql_host)) in rows.iter().enumerate() {
        let ours = finwait_collector::pair_key::pair_key(
            host[i],
            netns[i],
            state[i],
            (la[i], lp[i]),
            (ra[i], rp[i]),
        );
        let text = finwait_collector::pair_key::host_text(la[i]);
        if ours != *sql_key || text != *sql_host {
            wrong.push(format!(
                "{} {} state {} {}:{} -> {}:{}: SQL {sql_key} {sql_host:?}, ours {ours} {text:?}",
                host[i], netns[i], state[i], la[i], lp[i], ra[i], rp[i]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {n} keys differ, e.g.:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    c.stop().await;
}
