//! Running a parsed command line: the query each subcommand sends, fetching its pages,
//! and printing either the JSON as received or a table.

use std::io::Write;

use chrono::Utc;

use finwait_vocab::answer::{GroupsPage, HostsPage, LeaksPage, SocketsPage, TimelinePage, WhoPage};
use finwait_vocab::report::ReportsPage;
use finwait_vocab::time::InstantSpec;
use finwait_vocab::{Confidence, GroupBy, LeakKind};

use crate::cli::{
    Cli, Command, Global, LeaksArgs, ReportCommand, ReportRunArgs, SocketsArgs, TimelineArgs,
    WhoArgs,
};
use crate::client::{Client, ClientOptions, Token};
use crate::error::Error;
use crate::paging::Page;
use crate::url::Query;
use crate::{explain, format, paging, render};

/// Runs `cli`, writing what it prints to `out`. `env_token` is `FINWAIT_TOKEN`, used
/// when no token file is given.
pub async fn run(cli: Cli, env_token: Option<String>, out: &mut dyn Write) -> Result<(), Error> {
    let g = &cli.global;
    if let Command::Explain(e) = &cli.command {
        return write(out, explain::explain(&e.name)?.as_bytes());
    }
    let client = Client::new(ClientOptions {
        server: g.server.clone(),
        token: token(g, env_token)?,
        ca: g.ca.clone(),
        timeout: g.timeout.duration,
        timeout_shown: g.timeout.shown.clone(),
    })?;
    match &cli.command {
        Command::Hosts => {
            show::<HostsPage>(&client, g, Query::new(), out, |p| {
                render::hosts(p, Utc::now())
            })
            .await
        }
        Command::Leaks(a) if a.groups => {
            let scope = leak_scope(a);
            let by = a.by.unwrap_or(GroupBy::Process);
            show::<GroupsPage>(&client, g, leaks_query(a), out, |p| {
                render::groups(p, &scope, by)
            })
            .await
        }
        Command::Leaks(a) => {
            let scope = leak_scope(a);
            show::<LeaksPage>(&client, g, leaks_query(a), out, |p| {
                render::leaks(p, &scope)
            })
            .await
        }
        Command::Who(a) => show::<WhoPage>(&client, g, who_query(a), out, render::who).await,
        Command::Sockets(a) => {
            let filters = socket_filters(a);
            show::<SocketsPage>(&client, g, sockets_query(a), out, |p| {
                render::sockets(p, &filters)
            })
            .await
        }
        Command::Timeline(a) => {
            show::<TimelinePage>(&client, g, timeline_query(a), out, render::timeline).await
        }
        Command::Report(ReportCommand::List(a)) => {
            let mut q = Query::new();
            q.push_opt("schedule", a.schedule.as_deref());
            show::<ReportsPage>(&client, g, q, out, render::reports).await
        }
        Command::Report(ReportCommand::Show(a)) => {
            let mut q = Query::new();
            q.push("format", &a.format);
            let body = client.get(&format!("/api/v1/reports/{}", a.id), &q).await?;
            write(out, &body)
        }
        Command::Report(ReportCommand::Run(a)) => {
            let body = client
                .get("/api/v1/reports/run", &report_run_query(a))
                .await?;
            write(out, &body)
        }
        Command::Explain(_) => Ok(()),
    }
}

/// `/api/v1/reports/run`.
pub fn report_run_query(a: &ReportRunArgs) -> Query {
    let mut q = Query::new();
    q.push_opt("since", a.since.as_deref());
    q.push_opt("window", a.window.as_deref());
    if !a.host.is_empty() {
        q.push("host", a.host.join(","));
    }
    if !a.service.is_empty() {
        q.push("service", a.service.join(","));
    }
    q.push_opt("time_zone", a.time_zone.as_deref());
    q.push("format", &a.format);
    q
}

/// The token: from `--token-file` when given, else `FINWAIT_TOKEN`, else none.
fn token(g: &Global, env_token: Option<String>) -> Result<Option<Token>, Error> {
    match &g.token_file {
        Some(path) => Token::from_file(path).map(Some),
        None => Ok(env_token.as_deref().and_then(Token::new)),
    }
}

/// Fetches one page (or all with `--all`) and prints it.
async fn show<P: Page>(
    client: &Client,
    g: &Global,
    mut query: Query,
    out: &mut dyn Write,
    render: impl FnOnce(&P) -> String,
) -> Result<(), Error> {
    query.push_opt("limit", g.limit);
    let pages = paging::fetch(client, P::PATH, &query, g.all).await?;
    if g.json {
        let bytes = paging::json_output(&pages, P::LIST).map_err(|reason| Error::BadResponse {
            server: client.server().to_string(),
            path: P::PATH.to_string(),
            reason,
        })?;
        return write(out, &bytes);
    }
    let page: P = paging::parse(&pages, &client.server().to_string())?;
    let mut text = render(&page);
    if pages.more {
        text.push_str("(the server has more: add --all to fetch every page, or raise --limit)\n");
    }
    write(out, text.as_bytes())
}

fn write(out: &mut dyn Write, bytes: &[u8]) -> Result<(), Error> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// `/api/v1/leaks` and `/api/v1/leaks/groups` (which takes no kind or confidence, and
/// the only one to take `by`; clap refuses the wrong ones with `--groups` or without).
pub fn leaks_query(a: &LeaksArgs) -> Query {
    let mut q = Query::new();
    q.push_opt("since", a.since.as_deref());
    q.push_opt("min_age", a.min_age.as_deref());
    q.push_opt("host", a.host.as_deref());
    q.push_opt("process", a.process.as_deref());
    q.push_opt("service", a.service.as_deref());
    q.push_opt("kind", a.kind.map(LeakKind::name));
    q.push_opt("confidence", a.confidence.map(Confidence::name));
    q.push_opt("by", a.by.map(GroupBy::name));
    q
}

/// How "no leaks found …" ends: the period and the filters.
pub fn leak_scope(a: &LeaksArgs) -> String {
    let mut s = match a.since.as_deref() {
        None => "since 24h ago".to_string(),
        Some(t) => match InstantSpec::parse(t) {
            Some(InstantSpec::At(at)) => format!("since {}", format::time(at)),
            // Checked by clap already; shown as written either way.
            Some(InstantSpec::Ago(_)) | None => format!("since {t} ago"),
        },
    };
    if let Some(h) = &a.host {
        s.push_str(&format!(" on host {h}"));
    }
    if let Some(p) = &a.process {
        s.push_str(&format!(" for process {p}"));
    }
    if let Some(v) = &a.service {
        s.push_str(&format!(" of service {v}"));
    }
    if let Some(k) = a.kind {
        s.push_str(&format!(" of kind {k}"));
    }
    if let Some(c) = a.confidence {
        s.push_str(&format!(" with confidence {c}"));
    }
    if let Some(m) = &a.min_age {
        s.push_str(&format!(" held at least {m}"));
    }
    s
}

/// `/api/v1/who`.
pub fn who_query(a: &WhoArgs) -> Query {
    let mut q = Query::new();
    q.push("endpoint", a.endpoint);
    q.push_opt("at", a.at.as_deref());
    q
}

/// `/api/v1/sockets`.
pub fn sockets_query(a: &SocketsArgs) -> Query {
    let mut q = Query::new();
    q.push("host", &a.host);
    q.push_opt("state", a.state);
    q.push_opt("port", a.port);
    q.push_opt("pid", a.pid);
    q.push_opt("process", a.process.as_deref());
    q.push_opt("service", a.service.as_deref());
    q.push_opt("at", a.at.as_deref());
    q
}

/// How "no sockets on host H …" continues.
fn socket_filters(a: &SocketsArgs) -> String {
    let mut s = String::new();
    if let Some(st) = a.state {
        s.push_str(&format!(" in state {st}"));
    }
    if let Some(p) = a.port {
        s.push_str(&format!(" on port {p}"));
    }
    if let Some(p) = a.pid {
        s.push_str(&format!(" owned by pid {p}"));
    }
    if let Some(c) = &a.process {
        s.push_str(&format!(" owned by {c}"));
    }
    if let Some(v) = &a.service {
        s.push_str(&format!(" of service {v}"));
    }
    s
}

/// `/api/v1/timeline`.
pub fn timeline_query(a: &TimelineArgs) -> Query {
    let mut q = Query::new();
    q.push("host", &a.host);
    q.push_opt("since", a.since.as_deref());
    q.push_opt("until", a.until.as_deref());
    q.push_opt("step", a.step.as_deref());
    q
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::url::ServerUrl;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["finwait"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("valid flags")
    }

    fn target(path: &str, q: &Query) -> String {
        ServerUrl::parse("http://127.0.0.1:7070")
            .expect("valid")
            .target(path, q)
    }

    #[test]
    fn report_run_sends_its_window_filters_and_format() {
        let c = cli(&[
            "report",
            "run",
            "--since",
            "7d",
            "--window",
            "1d",
            "--host",
            "a",
            "--host",
            "b",
            "--service",
            "billing.service",
            "--time-zone",
            "Europe/Berlin",
            "--format",
            "md",
        ]);
        let Command::Report(ReportCommand::Run(a)) = &c.command else {
            panic!("report run expected")
        };
        assert_eq!(
            target("/api/v1/reports/run", &report_run_query(a)),
            "/api/v1/reports/run?since=7d&window=1d&host=a%2Cb&service=billing.service\
             &time_zone=Europe%2FBerlin&format=markdown"
        );
        let bad = Cli::try_parse_from(["finwait", "report", "show", "1", "--format", "pdf"])
            .expect_err("not a format");
        assert!(bad.to_string().contains("pdf"), "{bad}");
    }

    #[test]
    fn leaks_send_every_filter_encoded() {
        let c = cli(&[
            "leaks",
            "--since",
            "2026-11-23T03:00:00+01:00",
            "--min-age",
            "5m",
            "--host",
            "app 1",
            "--process",
            "java",
            "--service",
            "billing.service",
            "--kind",
            "half-closed-wait",
            "--confidence",
            "ONE_SIDED",
        ]);
        let Command::Leaks(a) = &c.command else {
            panic!("leaks expected")
        };
        assert_eq!(
            target("/api/v1/leaks", &leaks_query(a)),
            "/api/v1/leaks?since=2026-11-23T03%3A00%3A00%2B01%3A00&min_age=5m&host=app%201\
             &process=java&service=billing.service&kind=half_closed_wait&confidence=one_sided"
        );
        assert_eq!(
            leak_scope(a),
            "since 2026-11-23 02:00:00Z on host app 1 for process java of service \
             billing.service of kind half_closed_wait with confidence one_sided held at least 5m"
        );
    }

    #[test]
    fn groups_send_service_and_by() {
        let c = cli(&[
            "leaks",
            "--groups",
            "--by",
            "service",
            "--service",
            "pod/1f2e",
        ]);
        let Command::Leaks(a) = &c.command else {
            panic!("leaks expected")
        };
        assert_eq!(
            target("/api/v1/leaks/groups", &leaks_query(a)),
            "/api/v1/leaks/groups?service=pod%2F1f2e&by=service"
        );
        let c = cli(&["leaks", "--groups"]);
        let Command::Leaks(a) = &c.command else {
            panic!("leaks expected")
        };
        assert_eq!(
            target("/api/v1/leaks/groups", &leaks_query(a)),
            "/api/v1/leaks/groups",
            "the collector's default grouping is not spelled out"
        );
    }

    #[test]
    fn who_sends_the_ipv6_endpoint_intact() {
        let c = cli(&["who", "[2001:db8::1]:8080", "--at", "90m"]);
        let Command::Who(a) = &c.command else {
            panic!("who expected")
        };
        assert_eq!(
            target("/api/v1/who", &who_query(a)),
            "/api/v1/who?endpoint=%5B2001%3Adb8%3A%3A1%5D%3A8080&at=90m"
        );
    }

    #[test]
    fn sockets_send_the_canonical_state_name() {
        let c = cli(&[
            "sockets",
            "--host",
            "a",
            "--state",
            "close-wait",
            "--port",
            "8080",
            "--pid",
            "12",
            "--process",
            "srv",
            "--service",
            "srv.service",
            "--at",
            "1h",
        ]);
        let Command::Sockets(a) = &c.command else {
            panic!("sockets expected")
        };
        assert_eq!(
            target("/api/v1/sockets", &sockets_query(a)),
            "/api/v1/sockets?host=a&state=CLOSE_WAIT&port=8080&pid=12&process=srv\
             &service=srv.service&at=1h"
        );
        assert_eq!(
            socket_filters(a),
            " in state CLOSE_WAIT on port 8080 owned by pid 12 owned by srv of service srv.service"
        );
    }

    #[test]
    fn timeline_sends_its_window() {
        let c = cli(&[
            "timeline", "--host", "a", "--since", "7d", "--until", "1d", "--step", "1h",
        ]);
        let Command::Timeline(a) = &c.command else {
            panic!("timeline expected")
        };
        assert_eq!(
            target("/api/v1/timeline", &timeline_query(a)),
            "/api/v1/timeline?host=a&since=7d&until=1d&step=1h"
        );
    }

    #[test]
    fn the_token_file_wins_over_the_environment() {
        let dir = std::env::temp_dir().join(format!("finwait-cli-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let path = file.to_str().expect("utf-8 temp path");
        let c = cli(&["--token-file", path, "hosts"]);
        let t = token(&c.global, Some("from-env".into())).expect("readable");
        assert!(t.is_some());
        let c = cli(&["--token-file", "/nonexistent/finwait-token", "hosts"]);
        assert!(token(&c.global, None).is_err());
        let c = cli(&["hosts"]);
        assert!(
            token(&c.global, Some("  ".into()))
                .expect("no file")
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn explain_runs_offline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The server is unreachable on purpose: explain must not touch it.
        let c = cli(&["--server", "http://127.0.0.1:1", "explain", "close_wait"]);
        let mut out = Vec::new();
        rt.block_on(run(c, None, &mut out)).expect("offline");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("CLOSE_WAIT (TCP state)"), "{text}");
    }
}
