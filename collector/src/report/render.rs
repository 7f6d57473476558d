//! A report in each format, from its one document: self-contained HTML (inline
//! styles; charts are table cells, so mail clients that drop SVG, scripts and style
//! sheets still show them; prints on A4), Markdown, CSV (one row per leaking service
//! and process), a chat summary, and the JSON itself.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use finwait_vocab::TcpState;
use finwait_vocab::report::{Culprit, Link, Report, ReportFormat, Tally};
use finwait_vocab::time::format_age;

/// `report` as `format`.
pub fn render(report: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(report).unwrap_or_else(|e| {
            // A Report holds nothing serde_json cannot write; say so if it ever does.
            format!("{{\"error\": \"report not serialisable: {e}\"}}")
        }),
        ReportFormat::Html => html(report),
        ReportFormat::Markdown => markdown(report),
        ReportFormat::Csv => csv(report),
        ReportFormat::Text => text(report),
    }
}

fn tz(r: &Report) -> Tz {
    r.scope.time_zone.parse().unwrap_or(Tz::UTC)
}

fn day(r: &Report, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz(r)).format("%a %-d %b %Y").to_string()
}

fn instant(r: &Report, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz(r))
        .format("%a %-d %b %Y %H:%M")
        .to_string()
}

fn title(r: &Report) -> String {
    format!(
        "finwait {} report: {} → {} ({})",
        r.scope.schedule,
        instant(r, r.scope.window.start),
        instant(r, r.scope.window.end),
        r.scope.time_zone
    )
}

/// `now` against `before`: "+3 (was 1)", "−2 (was 5)", "= (was 4)".
fn change(now: i64, before: i64) -> String {
    match now - before {
        0 => format!("= (was {before})"),
        d if d > 0 => format!("+{d} (was {before})"),
        d => format!("−{} (was {before})", -d),
    }
}

fn hours(h: f64) -> String {
    if h >= 100.0 {
        format!("{h:.0}")
    } else {
        format!("{h:.1}")
    }
}

fn rate(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn peers(c: &Culprit) -> String {
    if c.peers.is_empty() {
        return "—".into();
    }
    c.peers
        .iter()
        .take(3)
        .map(|p| match &p.service {
            Some(s) => format!("{} ({s}) ×{}", p.host, p.count),
            None => format!("{} ×{}", p.host, p.count),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn status(r: &Report, c: &Culprit) -> String {
    if let Some(t) = c.fixed_at {
        format!("fixed {}", day(r, t))
    } else if c.now.total() == 0 {
        "gone".into()
    } else if r.baseline {
        "baseline".into()
    } else if c.before.total() == 0 {
        "new".into()
    } else if c.now.total() > c.before.total() {
        "worse".into()
    } else if c.now.total() < c.before.total() {
        "better".into()
    } else {
        "same".into()
    }
}

fn summary_line(r: &Report) -> String {
    let n = &r.now;
    if r.baseline {
        return format!(
            "Baseline: {} leaks in the window ({} open at its end, {} resolved), {} leaked socket-hours on {} hosts. Later reports compare against this one.",
            n.total(),
            n.open_at_end,
            n.resolved,
            hours(n.socket_hours),
            n.hosts_affected
        );
    }
    format!(
        "{} new leaks {}, {} resolved, {} open at the end, {} leaked socket-hours on {} hosts.",
        n.new,
        change(n.new, r.before.new),
        n.resolved,
        n.open_at_end,
        hours(n.socket_hours),
        n.hosts_affected
    )
}

// ---------------------------------------------------------------- chat text

fn text(r: &Report) -> String {
    let mut s = format!("{}\n{}\n", title(r), summary_line(r));
    let active: Vec<&Culprit> = r
        .services
        .iter()
        .filter(|c| c.now.total() > 0)
        .take(3)
        .collect();
    for c in active {
        let _ = writeln!(
            s,
            "• {}: {} leaks {} on {} host{}, {} new/day — {}",
            c.name,
            c.now.total(),
            change(c.now.total(), c.before.total()),
            c.hosts.len(),
            if c.hosts.len() == 1 { "" } else { "s" },
            rate(c.growth_per_day),
            status(r, c)
        );
    }
    for c in r.services.iter().filter(|c| c.fixed_at.is_some()).take(3) {
        if let Some(t) = c.fixed_at {
            let _ = writeln!(s, "✓ {} fixed {}", c.name, day(r, t));
        }
    }
    if !r.coverage.silent.is_empty() || !r.coverage.blind.is_empty() {
        let _ = writeln!(
            s,
            "Coverage: {} host(s) went silent, {} agent(s) could not see everything.",
            r.coverage.silent.len(),
            r.coverage.blind.len()
        );
    }
    match &r.link.page {
        Some(p) => {
            let _ = writeln!(s, "{p}");
        }
        None => {
            let _ = writeln!(s, "{}", r.link.cli);
        }
    }
    s
}

// ---------------------------------------------------------------- CSV

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv(r: &Report) -> String {
    let mut s = String::from(
        "group,name,host,comm,kinds,leaks,new,ongoing,resolved,open_at_end,socket_hours,\
         leaks_before,new_before,growth_per_hour,growth_per_day,hosts,peers,fixed_at,status,page,cli\n",
    );
    let groups = r
        .services
        .iter()
        .map(|c| ("service", c))
        .chain(r.processes.iter().map(|c| ("process", c)));
    for (group, c) in groups {
        let kinds: Vec<&str> = c.kinds.iter().map(|k| k.name()).collect();
        let peer_list: Vec<String> = c
            .peers
            .iter()
            .map(|p| {
                format!(
                    "{}{}:{}",
                    p.host,
                    p.service
                        .as_ref()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default(),
                    p.count
                )
            })
            .collect();
        let cells = [
            group.to_owned(),
            c.name.clone(),
            c.host.clone().unwrap_or_default(),
            c.comm.clone().unwrap_or_default(),
            kinds.join(" "),
            c.now.total().to_string(),
            c.now.new.to_string(),
            c.now.ongoing.to_string(),
            c.now.resolved.to_string(),
            c.now.open_at_end.to_string(),
            format!("{:.3}", c.now.socket_hours),
            c.before.total().to_string(),
            c.before.new.to_string(),
            format!("{:.4}", c.growth_per_hour),
            format!("{:.3}", c.growth_per_day),
            c.hosts.join(" "),
            peer_list.join(" "),
            c.fixed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            status(r, c),
            c.link.page.clone().unwrap_or_default(),
            c.link.cli.clone(),
        ];
        let line: Vec<String> = cells.iter().map(|c| field(c)).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------- Markdown

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn md_link(text: &str, l: &Link) -> String {
    match &l.page {
        Some(p) => format!("[{}]({})", md(text), p),
        None => md(text),
    }
}

fn markdown(r: &Report) -> String {
    let mut s = format!("# {}\n\n{}\n\n", md(&title(r)), summary_line(r));
    let t = |s: &mut String, label: &str, now: &Tally, before: &Tally| {
        let _ = writeln!(s, "| {label} | this window | previous |");
        let _ = writeln!(s, "|---|---:|---:|");
        for (name, a, b) in [
            ("new leaks", now.new, before.new),
            ("ongoing", now.ongoing, before.ongoing),
            ("resolved", now.resolved, before.resolved),
            ("open at end", now.open_at_end, before.open_at_end),
            ("hosts affected", now.hosts_affected, before.hosts_affected),
        ] {
            let _ = writeln!(s, "| {name} | {a} | {b} |");
        }
        let _ = writeln!(
            s,
            "| leaked socket-hours | {} | {} |\n",
            hours(now.socket_hours),
            hours(before.socket_hours)
        );
    };
    t(&mut s, "", &r.now, &r.before);
    if r.truncated {
        s.push_str("> More leaks than one report reads overlapped these windows: counts are a lower bound.\n\n");
    }
    s.push_str("## Services\n\n");
    culprits_md(&mut s, r, &r.services, false);
    s.push_str("## Processes\n\n");
    culprits_md(&mut s, r, &r.processes, true);
    s.push_str("## Oldest open leaks\n\n");
    if r.oldest_open.is_empty() {
        s.push_str("None open at the end of the window.\n\n");
    } else {
        s.push_str("| since | age | holder | peer | look |\n|---|---:|---|---|---|\n");
        for o in &r.oldest_open {
            let h = &o.holder;
            let peer = o
                .peer
                .as_ref()
                .map(|p| format!("{} {} {}", p.host, p.state.name(), p.local))
                .unwrap_or_else(|| "not seen".into());
            let _ = writeln!(
                s,
                "| {} | {} | {} {} {} → {} | {} | {} `{}` |",
                instant(r, o.since),
                format_age(o.age_s),
                md(&h.host),
                md(h.service.as_deref().or(h.comm.as_deref()).unwrap_or("?")),
                h.local,
                h.remote,
                md(&peer),
                md_link("page", &o.link),
                md(&o.link.cli)
            );
        }
        s.push('\n');
    }
    let f = &r.time_to_fix;
    let _ = writeln!(
        s,
        "## Time to fix\n\n{} leaks resolved in the window; first seen → ended: median {}, p90 {}, longest {}.\n",
        f.resolved,
        format_age(f.median_s),
        format_age(f.p90_s),
        format_age(f.max_s)
    );
    s.push_str("## Daily peaks per host\n\n");
    if r.peaks.hosts.is_empty() {
        s.push_str("No per-state counts in the window.\n\n");
    } else {
        let days: Vec<String> = r
            .peaks
            .days
            .iter()
            .map(|d| d.format("%a %-d").to_string())
            .collect();
        let _ = writeln!(s, "| host | state | {} |", days.join(" | "));
        let _ = writeln!(s, "|---|---|{}", "---:|".repeat(days.len()));
        for h in &r.peaks.hosts {
            for (state, v) in &h.states {
                let vals: Vec<String> = v.iter().map(i64::to_string).collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    md(&h.host),
                    state.name(),
                    vals.join(" | ")
                );
            }
        }
        if r.peaks.hosts_omitted > 0 {
            let _ = writeln!(s, "\n{} more hosts not shown.", r.peaks.hosts_omitted);
        }
        s.push('\n');
    }
    s.push_str("## TIME_WAIT pressure\n\n");
    if r.time_wait.is_empty() {
        s.push_str(
            "No host used more than half of its ephemeral port range towards one destination.\n\n",
        );
    } else {
        s.push_str(
            "| host | local → destination | peak | ports | share |\n|---|---|---:|---:|---:|\n",
        );
        for p in &r.time_wait {
            let _ = writeln!(
                s,
                "| {} | {} → {} | {} | {} | {:.0}% |",
                md(&p.host),
                p.local_addr,
                p.remote,
                p.count,
                p.ports,
                p.ratio * 100.0
            );
        }
        s.push('\n');
    }
    s.push_str("## Coverage\n\n");
    let _ = writeln!(s, "{} hosts known.", r.coverage.hosts);
    for h in &r.coverage.silent {
        let _ = writeln!(
            s,
            "- **{}** went silent: last report {}",
            md(&h.host),
            instant(r, h.last_seen)
        );
    }
    for h in &r.coverage.blind {
        let _ = writeln!(
            s,
            "- **{}** could not see everything: {}",
            md(&h.host),
            md(&h.problems.join(" "))
        );
    }
    let _ = writeln!(s, "\n---\nSame report: `{}`", r.link.cli);
    s
}

fn culprits_md(s: &mut String, r: &Report, cs: &[Culprit], per_host: bool) {
    if cs.is_empty() {
        s.push_str("No leaks in either window.\n\n");
        return;
    }
    if per_host {
        s.push_str("| host | process | leaks | change | new/h | peers | status | look |\n|---|---|---:|---|---:|---|---|---|\n");
    } else {
        s.push_str("| service | leaks | change | new/day | hosts | peers | status | look |\n|---|---:|---|---:|---:|---|---|---|\n");
    }
    for c in cs {
        let look = format!("{} `{}`", md_link("page", &c.link), md(&c.link.cli));
        if per_host {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                md(c.host.as_deref().unwrap_or("")),
                md(&c.name),
                c.now.total(),
                change(c.now.total(), c.before.total()),
                rate(c.growth_per_hour),
                md(&peers(c)),
                status(r, c),
                look
            );
        } else {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                md(&c.name),
                c.now.total(),
                change(c.now.total(), c.before.total()),
                rate(c.growth_per_day),
                c.hosts.len(),
                md(&peers(c)),
                status(r, c),
                look
            );
        }
    }
    s.push('\n');
}

// ---------------------------------------------------------------- HTML

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const FONT: &str = "font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";
const MUTED: &str = "#5f6b7a";
const RED: &str = "#c62828";
const AMBER: &str = "#d98b00";
const BLUE: &str = "#2f6db5";
const GREEN: &str = "#2e7d32";
const TH: &str = "text-align:left;padding:6px 8px;border-bottom:2px solid #d0d7de;font-size:12px;color:#5f6b7a;font-weight:600";
const TD: &str =
    "padding:6px 8px;border-bottom:1px solid #eaeef2;font-size:13px;vertical-align:top";

fn a(text: &str, l: &Link) -> String {
    match &l.page {
        Some(p) => format!(
            "<a href=\"{}\" style=\"color:{BLUE};text-decoration:none\">{}</a>",
            esc(p),
            esc(text)
        ),
        None => esc(text),
    }
}

fn cli(l: &Link) -> String {
    format!(
        "<div style=\"font-family:Menlo,Consolas,monospace;font-size:11px;color:{MUTED};margin-top:2px\">{}</div>",
        esc(&l.cli)
    )
}

/// A horizontal bar: a two-cell table, so mail clients draw it without CSS support.
fn bar(value: f64, max: f64, color: &str, width: u32) -> String {
    let w = if max > 0.0 {
        ((value / max) * width as f64)
            .round()
            .clamp(if value > 0.0 { 2.0 } else { 0.0 }, width as f64) as u32
    } else {
        0
    };
    if w == 0 {
        return String::new();
    }
    format!(
        "<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" style=\"border-collapse:collapse\"><tr><td width=\"{w}\" height=\"8\" bgcolor=\"{color}\" style=\"width:{w}px;height:8px;background:{color};font-size:0;line-height:0\">&nbsp;</td></tr></table>"
    )
}

fn section(s: &mut String, heading: &str, note: &str) {
    let _ = write!(
        s,
        "<h2 style=\"{FONT};font-size:17px;margin:28px 0 4px;color:#1f2328\">{}</h2>",
        esc(heading)
    );
    if !note.is_empty() {
        let _ = write!(
            s,
            "<p style=\"{FONT};font-size:12px;color:{MUTED};margin:0 0 8px\">{}</p>",
            esc(note)
        );
    }
}

fn card(label: &str, value: &str, sub: &str, color: &str) -> String {
    format!(
        "<td style=\"padding:10px 12px;border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;width:20%;vertical-align:top\">\
         <div style=\"font-size:11px;color:{MUTED};text-transform:uppercase;letter-spacing:.04em\">{}</div>\
         <div style=\"font-size:24px;font-weight:700;color:{color};margin:2px 0\">{}</div>\
         <div style=\"font-size:11px;color:{MUTED}\">{}</div></td>",
        esc(label),
        esc(value),
        esc(sub)
    )
}

fn html(r: &Report) -> String {
    let mut s = String::with_capacity(32 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>@page {{ size: A4; margin: 14mm }} @media print {{ a {{ color: inherit }} }}</style></head>\
         <body style=\"margin:0;padding:0;background:#ffffff;color:#1f2328;{FONT}\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\"><tr><td align=\"center\">\
         <table role=\"presentation\" width=\"760\" cellpadding=\"0\" cellspacing=\"0\" style=\"max-width:760px;width:100%;{FONT}\"><tr><td style=\"padding:20px 16px\">",
        esc(&title(r))
    );
    let _ = write!(
        s,
        "<div style=\"font-size:12px;color:{MUTED}\">finwait · {} report</div>\
         <h1 style=\"font-size:22px;margin:4px 0 2px\">{} → {}</h1>\
         <div style=\"font-size:12px;color:{MUTED}\">{} · compared with {} → {} · leak threshold {} · built {}</div>",
        esc(&r.scope.schedule),
        esc(&instant(r, r.scope.window.start)),
        esc(&instant(r, r.scope.window.end)),
        esc(&r.scope.time_zone),
        esc(&instant(r, r.scope.previous.start)),
        esc(&instant(r, r.scope.previous.end)),
        esc(&format_age(r.scope.leak_threshold_s as i64)),
        esc(&instant(r, r.generated_at)),
    );
    if !r.scope.hosts.is_empty() || !r.scope.services.is_empty() {
        let _ = write!(
            s,
            "<div style=\"font-size:12px;color:{MUTED}\">Only hosts: {} · services: {}</div>",
            esc(&if r.scope.hosts.is_empty() {
                "all".into()
            } else {
                r.scope.hosts.join(", ")
            }),
            esc(&if r.scope.services.is_empty() {
                "all".into()
            } else {
                r.scope.services.join(", ")
            }),
        );
    }
    let n = &r.now;
    let b = &r.before;
    if r.baseline {
        let _ = write!(
            s,
            "<p style=\"margin:14px 0;padding:10px 12px;background:#fff8e1;border-left:4px solid {AMBER};font-size:13px\">{}</p>",
            esc(&summary_line(r))
        );
    } else {
        let _ = write!(
            s,
            "<p style=\"margin:14px 0 10px;font-size:14px\">{}</p>",
            esc(&summary_line(r))
        );
    }
    let _ = write!(
        s,
        "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"6\" style=\"margin:0 -6px\"><tr>{}{}{}{}{}</tr></table>",
        card(
            if r.baseline {
                "Leaks (baseline)"
            } else {
                "New leaks"
            },
            &(if r.baseline { n.total() } else { n.new }).to_string(),
            &if r.baseline {
                String::new()
            } else {
                change(n.new, b.new)
            },
            if n.new > b.new && !r.baseline {
                RED
            } else {
                "#1f2328"
            }
        ),
        card(
            "Resolved",
            &n.resolved.to_string(),
            &change(n.resolved, b.resolved),
            GREEN
        ),
        card(
            "Open at end",
            &n.open_at_end.to_string(),
            &change(n.open_at_end, b.open_at_end),
            if n.open_at_end > 0 { RED } else { "#1f2328" }
        ),
        card(
            "Socket-hours",
            &hours(n.socket_hours),
            &format!("was {}", hours(b.socket_hours)),
            "#1f2328"
        ),
        card(
            "Hosts affected",
            &n.hosts_affected.to_string(),
            &change(n.hosts_affected, b.hosts_affected),
            "#1f2328"
        ),
    );
    if r.truncated {
        let _ = write!(
            s,
            "<p style=\"font-size:12px;color:{RED}\">More leaks than one report reads overlapped these windows: counts are a lower bound.</p>"
        );
    }

    section(
        &mut s,
        "Who leaks: services",
        "Leaks present in the window (new + ongoing), against the previous window; new leaks per day; the hosts holding the other end.",
    );
    culprits_html(&mut s, r, &r.services, false);
    section(&mut s, "Who leaks: processes", "Per host and command name.");
    culprits_html(&mut s, r, &r.processes, true);

    section(
        &mut s,
        "Oldest open leaks",
        "Still open at the end of the window, oldest first.",
    );
    if r.oldest_open.is_empty() {
        let _ = write!(
            s,
            "<p style=\"font-size:13px;color:{GREEN}\">None open at the end of the window.</p>"
        );
    } else {
        let _ = write!(
            s,
            "<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"border-collapse:collapse\"><tr><th style=\"{TH}\">Open for</th><th style=\"{TH}\">Holder</th><th style=\"{TH}\">Peer</th></tr>"
        );
        for o in &r.oldest_open {
            let h = &o.holder;
            let who = format!(
                "{} · {}{}",
                h.host,
                h.service
                    .as_deref()
                    .or(h.comm.as_deref())
                    .unwrap_or("no process"),
                h.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
            let peer = match &o.peer {
                Some(p) => format!(
                    "{} · {} · {}",
                    p.host,
                    p.service
                        .as_deref()
                        .or(p.comm.as_deref())
                        .unwrap_or("no process"),
                    p.state.name()
                ),
                None => "not seen".into(),
            };
            let _ = write!(
                s,
                "<tr><td style=\"{TD};white-space:nowrap\"><b style=\"color:{RED}\">{}</b><div style=\"font-size:11px;color:{MUTED}\">since {}</div></td>\
                 <td style=\"{TD}\">{}<div style=\"font-family:Menlo,Consolas,monospace;font-size:12px\">{} {} → {}</div>{}</td><td style=\"{TD}\">{}</td></tr>",
                esc(&format_age(o.age_s)),
                esc(&instant(r, o.since)),
                a(&who, &o.link),
                esc(o.kind.name()),
                esc(&h.local),
                esc(&h.remote),
                cli(&o.link),
                esc(&peer)
            );
        }
        s.push_str("</table>");
    }

    let f = &r.time_to_fix;
    section(
        &mut s,
        "Time to fix",
        "First seen → ended, for the leaks resolved in the window.",
    );
    let _ = write!(
        s,
        "<p style=\"font-size:13px;margin:0\">{} resolved · median <b>{}</b> · p90 <b>{}</b> · longest <b>{}</b></p>",
        f.resolved,
        esc(&format_age(f.median_s)),
        esc(&format_age(f.p90_s)),
        esc(&format_age(f.max_s))
    );

    peaks_html(&mut s, r);

    section(
        &mut s,
        "TIME_WAIT pressure",
        "One destination using more than half of a host's ephemeral port range: new connections to it are close to failing (EADDRNOTAVAIL).",
    );
    if r.time_wait.is_empty() {
        let _ = write!(
            s,
            "<p style=\"font-size:13px;color:{GREEN}\">No pressure in the window.</p>"
        );
    } else {
        let _ = write!(
            s,
            "<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"border-collapse:collapse\"><tr><th style=\"{TH}\">Host</th><th style=\"{TH}\">Local → destination</th><th style=\"{TH}\">Peak / ports</th><th style=\"{TH}\">Share</th></tr>"
        );
        for p in &r.time_wait {
            let _ = write!(
                s,
                "<tr><td style=\"{TD}\">{}</td><td style=\"{TD};font-family:Menlo,Consolas,monospace;font-size:12px\">{} → {}</td><td style=\"{TD}\">{} / {}</td><td style=\"{TD}\">{:.0}%{}</td></tr>",
                esc(&p.host),
                esc(&p.local_addr),
                esc(&p.remote),
                p.count,
                p.ports,
                p.ratio * 100.0,
                bar(p.ratio, 1.0, AMBER, 120)
            );
        }
        s.push_str("</table>");
    }

    section(&mut s, "Coverage", "What this report could not see.");
    let c = &r.coverage;
    if c.silent.is_empty() && c.blind.is_empty() {
        let _ = write!(
            s,
            "<p style=\"font-size:13px;color:{GREEN};margin:0\">All {} hosts reported and their agents saw everything.</p>",
            c.hosts
        );
    } else {
        let _ = write!(
            s,
            "<ul style=\"font-size:13px;margin:0;padding-left:18px\">"
        );
        for h in &c.silent {
            let _ = write!(
                s,
                "<li><b>{}</b> went silent: last report {}</li>",
                esc(&h.host),
                esc(&instant(r, h.last_seen))
            );
        }
        for h in &c.blind {
            let _ = write!(
                s,
                "<li><b>{}</b> could not see everything: {}</li>",
                esc(&h.host),
                esc(&h.problems.join(" "))
            );
        }
        s.push_str("</ul>");
    }

    let _ = write!(
        s,
        "<p style=\"margin-top:28px;padding-top:8px;border-top:1px solid #d0d7de;font-size:11px;color:{MUTED}\">{} · the same report: <span style=\"font-family:Menlo,Consolas,monospace\">{}</span>{}</p>",
        a("Open the dashboard", &r.link),
        esc(&r.link.cli),
        r.id.map(|id| format!(" · <span style=\"font-family:Menlo,Consolas,monospace\">finwait report show {id}</span>")).unwrap_or_default()
    );
    s.push_str("</td></tr></table></td></tr></table></body></html>\n");
    s
}

fn culprits_html(s: &mut String, r: &Report, cs: &[Culprit], per_host: bool) {
    if cs.is_empty() {
        let _ = write!(
            s,
            "<p style=\"font-size:13px;color:{GREEN}\">No leaks in either window.</p>"
        );
        return;
    }
    let max = cs
        .iter()
        .map(|c| c.now.total().max(c.before.total()))
        .max()
        .unwrap_or(0) as f64;
    let _ = write!(
        s,
        "<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"border-collapse:collapse\"><tr>\
         <th style=\"{TH}\">{}</th><th style=\"{TH}\">Leaks</th><th style=\"{TH}\">{}</th><th style=\"{TH}\">Hosts</th><th style=\"{TH}\">Other end</th><th style=\"{TH}\">Status</th></tr>",
        if per_host {
            "Host · process"
        } else {
            "Service"
        },
        if per_host { "New/hour" } else { "New/day" },
    );
    for c in cs {
        let name = match &c.host {
            Some(h) => format!("{h} · {}", c.name),
            None => c.name.clone(),
        };
        let st = status(r, c);
        let color = match st.as_str() {
            "worse" | "new" => RED,
            "better" | "gone" => GREEN,
            s if s.starts_with("fixed") => GREEN,
            _ => MUTED,
        };
        let kinds: Vec<&str> = c.kinds.iter().map(|k| k.name()).collect();
        let _ = write!(
            s,
            "<tr><td style=\"{TD}\">{}<div style=\"font-size:11px;color:{MUTED}\">{}</div>{}</td>\
             <td style=\"{TD};white-space:nowrap\"><b>{}</b> <span style=\"font-size:11px;color:{MUTED}\">{}</span>{}{}</td>\
             <td style=\"{TD}\">{}</td><td style=\"{TD}\">{}</td><td style=\"{TD};font-size:12px\">{}</td>\
             <td style=\"{TD};color:{color};font-weight:600;white-space:nowrap\">{}</td></tr>",
            a(&name, &c.link),
            esc(&kinds.join(", ")),
            cli(&c.link),
            c.now.total(),
            esc(&change(c.now.total(), c.before.total())),
            bar(c.now.total() as f64, max, RED, 140),
            bar(c.before.total() as f64, max, "#c9ced6", 140),
            esc(&rate(if per_host {
                c.growth_per_hour
            } else {
                c.growth_per_day
            })),
            c.hosts.len(),
            esc(&peers(c)),
            esc(&st)
        );
    }
    s.push_str("</table>");
}

/// The chart of daily peaks: a row per host, a column per day, three bars per cell
/// (CLOSE_WAIT, TIME_WAIT, ESTABLISHED), each scaled to its state's highest peak.
fn peaks_html(s: &mut String, r: &Report) {
    let p = &r.peaks;
    section(
        s,
        "Daily peaks per host",
        &format!(
            "Highest per-state count each day ({}). Bars: CLOSE_WAIT red, TIME_WAIT amber, ESTABLISHED blue, each scaled to its highest peak; the number is the CLOSE_WAIT peak.{}",
            r.scope.time_zone,
            if p.hosts_omitted > 0 {
                format!(" {} more hosts not shown.", p.hosts_omitted)
            } else {
                String::new()
            }
        ),
    );
    if p.hosts.is_empty() {
        let _ = write!(
            s,
            "<p style=\"font-size:13px;color:{MUTED}\">No per-state counts in the window.</p>"
        );
        return;
    }
    let states = [
        (TcpState::CloseWait, RED),
        (TcpState::TimeWait, AMBER),
        (TcpState::Established, BLUE),
    ];
    let max_of = |st: TcpState| {
        p.hosts
            .iter()
            .filter_map(|h| h.states.get(&st))
            .flat_map(|v| v.iter().copied())
            .max()
            .unwrap_or(0)
    };
    let maxes: Vec<i64> = states.iter().map(|(st, _)| max_of(*st)).collect();
    const H: i64 = 36;
    let _ = write!(
        s,
        "<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" style=\"border-collapse:collapse\"><tr><th style=\"{TH}\">Host</th>"
    );
    for d in &p.days {
        let _ = write!(
            s,
            "<th style=\"{TH};text-align:center\">{}</th>",
            esc(&d.format("%a %-d").to_string())
        );
    }
    s.push_str("</tr>");
    for h in &p.hosts {
        let _ = write!(
            s,
            "<tr><td style=\"{TD};white-space:nowrap\">{}</td>",
            esc(&h.host)
        );
        for i in 0..p.days.len() {
            let _ = write!(
                s,
                "<td style=\"{TD};text-align:center;padding:4px 2px\"><table role=\"presentation\" cellpadding=\"0\" cellspacing=\"1\" align=\"center\"><tr>"
            );
            let mut tip = Vec::new();
            for ((st, color), max) in states.iter().zip(&maxes) {
                let v = h
                    .states
                    .get(st)
                    .and_then(|v| v.get(i))
                    .copied()
                    .unwrap_or(0);
                tip.push(format!("{} {v}", st.name()));
                let px = if *max > 0 {
                    ((v * H + *max - 1) / *max).min(H)
                } else {
                    0
                };
                let px = if v > 0 { px.max(1) } else { 0 };
                let _ = write!(
                    s,
                    "<td valign=\"bottom\" style=\"height:{H}px;vertical-align:bottom\"><table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\"><tr><td width=\"5\" height=\"{px}\" bgcolor=\"{color}\" style=\"width:5px;height:{px}px;background:{color};font-size:0;line-height:0\"></td></tr></table></td>"
                );
            }
            let cw = h
                .states
                .get(&TcpState::CloseWait)
                .and_then(|v| v.get(i))
                .copied()
                .unwrap_or(0);
            let _ = write!(
                s,
                "</tr></table><div title=\"{}\" style=\"font-size:10px;color:{}\">{}</div></td>",
                esc(&tip.join(", ")),
                if cw > 0 { RED } else { MUTED },
                cw
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}
