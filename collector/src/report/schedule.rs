//! Report schedules: the `--reports-file` TOML (or the flags' simple case), checked
//! whole at start-up, and which windows are due.
//!
//! ```toml
//! public_url = "https://finwait.example.net:7070"  # links in reports (default: paths)
//! retention_days = 180                             # stored reports kept this long
//!
//! [[report]]
//! name = "weekly"                 # unique; names the stored reports and the files
//! cron = "0 8 * * MON"            # 5 fields: minute hour day-of-month month day-of-week
//! time_zone = "Europe/Berlin"     # IANA; the cron and the report's days are read in it
//! window = "7d"                   # the report covers [occurrence - window, occurrence)
//! formats = ["html", "markdown", "csv", "json"]   # written to directories
//! only_changed = false            # true: not delivered when nothing changed
//! hosts = []                      # only these hostnames (empty: all)
//! services = []                   # only these services (empty: all)
//!
//! [[report.destination]]
//! directory = "/var/lib/finwait/reports"
//!
//! [[report.destination]]
//! webhook = "https://chat.example.net/hooks/T0KEN"
//! body = "full"                   # full: {"text": summary, "report": document}; text: {"text": summary}
//! ca_file = "/etc/finwait/webhook-ca.pem"   # https only (default: the system's CAs)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use finwait_vocab::report::{ReportFormat, Window};
use finwait_vocab::time::parse_duration;
use serde::Deserialize;

/// At most this many missed windows of one schedule are caught up at once (the
/// newest ones); older ones can be built with `finwait report run`.
pub const MAX_CATCH_UP: usize = 30;

/// The reports file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    public_url: Option<String>,
    retention_days: Option<u32>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    max_attempts: Option<u32>,
    #[serde(default)]
    report: Vec<ScheduleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    name: String,
    cron: String,
    #[serde(default)]
    time_zone: Option<String>,
    window: String,
    #[serde(default)]
    formats: Option<Vec<String>>,
    #[serde(default)]
    only_changed: bool,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    destination: Vec<DestinationFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationFile {
    directory: Option<PathBuf>,
    webhook: Option<String>,
    body: Option<String>,
    ca_file: Option<PathBuf>,
}

/// Where a report goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// Files `<schedule>-<end>.<ext>` in a directory, one per format.
    Directory {
        /// The directory (created if missing).
        path: PathBuf,
        /// The formats written.
        formats: Vec<ReportFormat>,
    },
    /// An HTTP POST of JSON.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// Only the chat summary (`{"text": ...}`), not the document too.
        text_only: bool,
        /// CA bundle for `https://` (default: the system's).
        ca_file: Option<PathBuf>,
    },
}

impl Destination {
    /// Its name in delivery states: the directory, or the webhook's URL without its
    /// path (which often holds a secret).
    pub fn label(&self) -> String {
        match self {
            Destination::Directory { path, .. } => format!("dir:{}", path.display()),
            Destination::Webhook { url, .. } => {
                let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
                let host_end = url[scheme_end..]
                    .find('/')
                    .map(|i| scheme_end + i)
                    .unwrap_or(url.len());
                format!("webhook:{}", &url[..host_end])
            }
        }
    }
}

/// One schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    /// The cron expression as written.
    pub cron_text: String,
    cron: Cron,
    /// Its time zone.
    pub tz: Tz,
    /// How long a window is.
    pub window: Duration,
    /// Not delivered when nothing changed.
    pub only_changed: bool,
    /// Only these hostnames.
    pub hosts: Vec<String>,
    /// Only these services.
    pub services: Vec<String>,
    /// Where it goes.
    pub destinations: Vec<Destination>,
}

/// Every schedule and the delivery settings.
#[derive(Debug, Clone)]
pub struct Schedules {
    /// The schedules.
    pub schedules: Vec<Schedule>,
    /// The dashboard's public URL, for links.
    pub public_url: Option<String>,
    /// Stored reports are kept this many days.
    pub retention_days: u32,
    /// First retry delay of a failed delivery (doubles up to `retry_max`).
    pub retry_initial: StdDuration,
    /// Longest retry delay.
    pub retry_max: StdDuration,
    /// A delivery is given up (state `failed`) after this many attempts.
    pub max_attempts: u32,
}

/// The flags' simple case: the default schedules, delivered to these.
#[derive(Debug, Clone, Default)]
pub struct Simple {
    /// `--report-dir`.
    pub dir: Option<PathBuf>,
    /// `--report-webhook`.
    pub webhook: Option<String>,
    /// `--report-time-zone`.
    pub time_zone: Option<String>,
    /// `--public-url`.
    pub public_url: Option<String>,
}

fn tz(name: &str, at: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("{at}: {name:?} is not an IANA time zone (e.g. UTC, Europe/Berlin)"))
}

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week;
/// names like MON and JAN, ranges, lists and steps).
pub fn cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if fields != 5 || text.contains('@') {
        return Err(format!(
            "{text:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. \"0 8 * * MON\")"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("{text:?}: {e}"))
}

fn window(text: &str, at: &str) -> Result<Duration, String> {
    let s = parse_duration(text)
        .ok_or_else(|| format!("{at}: window {text:?} is not a duration (e.g. 1d, 7d, 12h)"))?;
    if !(60.0..=366.0 * 86_400.0).contains(&s) {
        return Err(format!("{at}: window {text:?} must be between 1m and 366d"));
    }
    Ok(Duration::milliseconds((s * 1000.0) as i64))
}

fn std_duration(
    text: Option<&str>,
    default: StdDuration,
    key: &str,
) -> Result<StdDuration, String> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t)
            .filter(|s| *s >= 0.1)
            .map(StdDuration::from_secs_f64)
            .ok_or_else(|| format!("{key}: {t:?} is not a duration (e.g. 30s, 5m)")),
    }
}

impl Schedules {
    /// The daily and weekly defaults, delivered where the flags say.
    pub fn defaults(simple: &Simple) -> Result<Schedules, Vec<String>> {
        let zone = simple.time_zone.as_deref().unwrap_or("UTC");
        let tz = tz(zone, "--report-time-zone").map_err(|e| vec![e])?;
        let mut destinations = Vec::new();
        if let Some(dir) = &simple.dir {
            destinations.push(Destination::Directory {
                path: dir.clone(),
                formats: ReportFormat::ALL
                    .into_iter()
                    .filter(|f| *f != ReportFormat::Text)
                    .collect(),
            });
        }
        if let Some(url) = &simple.webhook {
            check_url(url, "--report-webhook").map_err(|e| vec![e])?;
            destinations.push(Destination::Webhook {
                url: url.clone(),
                text_only: false,
                ca_file: None,
            });
        }
        let make = |name: &str, cron_text: &str, days: i64| -> Result<Schedule, Vec<String>> {
            Ok(Schedule {
                name: name.into(),
                cron_text: cron_text.into(),
                cron: cron(cron_text).map_err(|e| vec![e])?,
                tz,
                window: Duration::days(days),
                only_changed: false,
                hosts: vec![],
                services: vec![],
                destinations: destinations.clone(),
            })
        };
        Ok(Schedules {
            schedules: vec![
                make("daily", "0 6 * * *", 1)?,
                make("weekly", "0 6 * * MON", 7)?,
            ],
            public_url: simple.public_url.clone(),
            retention_days: 180,
            retry_initial: StdDuration::from_secs(30),
            retry_max: StdDuration::from_secs(3600),
            max_attempts: 20,
        })
    }

    /// Reads a reports file; every problem is reported at once, named by its key.
    /// Without `[[report]]` tables the defaults apply (delivered as the flags say).
    pub fn load(path: &Path, simple: &Simple) -> Result<Schedules, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("--reports-file {}: {e}", path.display())])?;
        Schedules::parse(&text, simple).map_err(|es| {
            es.into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect()
        })
    }

    /// Parses a reports file's text.
    pub fn parse(text: &str, simple: &Simple) -> Result<Schedules, Vec<String>> {
        let file: File =
            toml::from_str(text).map_err(|e| vec![e.message().to_owned() + &at(&e)])?;
        let mut out = Schedules::defaults(simple)?;
        let mut errors = Vec::new();
        // A flag overrides the file.
        if let Some(u) = out.public_url.take().or(file.public_url) {
            match check_url(&u, "public_url") {
                Ok(()) => out.public_url = Some(u),
                Err(e) => errors.push(e),
            }
        }
        if let Some(d) = file.retention_days {
            out.retention_days = d;
        }
        let mut durations = |t: Option<String>, d, key| {
            std_duration(t.as_deref(), d, key).unwrap_or_else(|e| {
                errors.push(e);
                d
            })
        };
        out.retry_initial = durations(file.retry_initial, out.retry_initial, "retry_initial");
        out.retry_max = durations(file.retry_max, out.retry_max, "retry_max");
        if let Some(m) = file.max_attempts {
            if m == 0 {
                errors.push("max_attempts: must be at least 1".into());
            }
            out.max_attempts = m.max(1);
        }
        if !file.report.is_empty() {
            out.schedules.clear();
            if simple.dir.is_some() || simple.webhook.is_some() {
                errors.push(
                    "--report-dir and --report-webhook deliver the default schedules; this file \
                     defines its own: give each [[report]] a [[report.destination]] instead"
                        .into(),
                );
            }
        }
        for (i, s) in file.report.into_iter().enumerate() {
            let at = format!("report[{i}] ({:?})", s.name);
            match schedule(s, &at) {
                Ok(s) if out.schedules.iter().any(|o| o.name == s.name) => {
                    errors.push(format!("{at}: name used twice"))
                }
                Ok(s) => out.schedules.push(s),
                Err(mut es) => errors.append(&mut es),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// The schedule named `name`.
    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.name == name)
    }
}

fn at(e: &toml::de::Error) -> String {
    e.span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default()
}

fn check_url(url: &str, key: &str) -> Result<(), String> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.split("://").nth(1).is_some_and(|r| !r.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!("{key}: {url:?} is not an http:// or https:// URL"))
    }
}

fn schedule(s: ScheduleFile, at: &str) -> Result<Schedule, Vec<String>> {
    let mut errors = Vec::new();
    if s.name.is_empty()
        || !s
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        errors.push(format!("{at}: name must be letters, digits, - and _"));
    }
    let cron = cron(&s.cron)
        .map_err(|e| errors.push(format!("{at}: cron {e}")))
        .ok();
    let tz = tz(
        s.time_zone.as_deref().unwrap_or("UTC"),
        &format!("{at}: time_zone"),
    )
    .map_err(|e| errors.push(e))
    .ok();
    let window = window(&s.window, at).map_err(|e| errors.push(e)).ok();
    let formats: Vec<ReportFormat> = match s.formats {
        None => vec![
            ReportFormat::Html,
            ReportFormat::Markdown,
            ReportFormat::Csv,
            ReportFormat::Json,
        ],
        Some(fs) => fs
            .iter()
            .filter_map(|f| {
                f.parse()
                    .map_err(|e| errors.push(format!("{at}: formats: {e}")))
                    .ok()
            })
            .collect(),
    };
    let mut destinations = Vec::new();
    for (j, d) in s.destination.into_iter().enumerate() {
        let dat = format!("{at}: destination[{j}]");
        match (d.directory, d.webhook) {
            (Some(path), None) => {
                if d.body.is_some() || d.ca_file.is_some() {
                    errors.push(format!("{dat}: body and ca_file are for webhooks"));
                }
                destinations.push(Destination::Directory {
                    path,
                    formats: formats.clone(),
                });
            }
            (None, Some(url)) => {
                if let Err(e) = check_url(&url, &format!("{dat}: webhook")) {
                    errors.push(e);
                }
                let text_only = match d.body.as_deref() {
                    None | Some("full") => false,
                    Some("text") => true,
                    Some(other) => {
                        errors.push(format!("{dat}: body {other:?} is not full or text"));
                        false
                    }
                };
                destinations.push(Destination::Webhook {
                    url,
                    text_only,
                    ca_file: d.ca_file,
                });
            }
            _ => errors.push(format!("{dat}: needs exactly one of directory or webhook")),
        }
    }
    match (cron, tz, window) {
        (Some(cron), Some(tz), Some(window)) if errors.is_empty() => Ok(Schedule {
            name: s.name,
            cron_text: s.cron,
            cron,
            tz,
            window,
            only_changed: s.only_changed,
            hosts: s.hosts,
            services: s.services,
            destinations,
        }),
        _ => Err(errors),
    }
}

impl Schedule {
    /// The window that occurrence `end` closes.
    pub fn window_ending(&self, end: DateTime<Utc>) -> Window {
        Window {
            start: end - self.window,
            end,
        }
    }

    /// Occurrences after `last` (exclusive; None: only the latest one) up to `now`
    /// (inclusive), oldest first, at most [`MAX_CATCH_UP`] (the newest ones).
    pub fn due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let local_now = now.with_timezone(&self.tz);
        let Some(last) = last else {
            return self
                .cron
                .find_previous_occurrence(&local_now, true)
                .map(|t| vec![t.with_timezone(&Utc)])
                .unwrap_or_default();
        };
        let mut out = Vec::new();
        let mut t = last.with_timezone(&self.tz);
        // Bounded: a minutely schedule down for a year would otherwise walk 500k steps.
        for _ in 0..100_000 {
            match self.cron.find_next_occurrence(&t, false) {
                Ok(next) if next <= local_now => {
                    out.push(next.with_timezone(&Utc));
                    if out.len() > MAX_CATCH_UP {
                        out.remove(0);
                    }
                    t = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The next occurrence after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn defaults_are_a_daily_and_a_weekly_report() {
        let s = Schedules::defaults(&Simple::default()).expect("defaults");
        let names: Vec<&str> = s.schedules.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["daily", "weekly"]);
        assert_eq!(s.schedules[1].window, Duration::days(7));
        assert!(s.schedules[0].destinations.is_empty());
    }

    #[test]
    fn a_file_is_read_and_every_mistake_is_named() {
        let ok = Schedules::parse(
            r#"
            public_url = "https://finwait.example.net:7070"
            [[report]]
            name = "weekly-berlin"
            cron = "0 8 * * MON"
            time_zone = "Europe/Berlin"
            window = "7d"
            formats = ["html", "csv"]
            only_changed = true
            services = ["billing.service"]
            [[report.destination]]
            directory = "/tmp/r"
            [[report.destination]]
            webhook = "http://127.0.0.1:9/hook/secret"
            body = "text"
            "#,
            &Simple::default(),
        )
        .expect("valid");
        assert_eq!(ok.schedules.len(), 1);
        let s = &ok.schedules[0];
        assert_eq!(s.tz, chrono_tz::Europe::Berlin);
        assert!(s.only_changed);
        assert_eq!(s.destinations.len(), 2);
        assert_eq!(s.destinations[1].label(), "webhook:http://127.0.0.1:9");

        let bad = Schedules::parse(
            r#"
            [[report]]
            name = "x"
            cron = "* * * *"
            time_zone = "Mars/Olympus"
            window = "soon"
            formats = ["pdf"]
            [[report.destination]]
            webhook = "ftp://x"
            "#,
            &Simple::default(),
        )
        .expect_err("invalid");
        let all = bad.join("\n");
        for needle in ["5-field", "Mars/Olympus", "\"soon\"", "\"pdf\"", "ftp://x"] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        let mixed = Schedules::parse(
            "[[report]]\nname='a'\ncron='* * * * *'\nwindow='1d'\n",
            &Simple {
                dir: Some("/tmp/x".into()),
                ..Simple::default()
            },
        )
        .expect_err("flags for defaults with a file's schedules");
        assert!(mixed[0].contains("--report-dir"), "{mixed:?}");
        let unknown = Schedules::parse(
            "[[report]]\nname='a'\ncron='* * * * *'\nwindow='1d'\ncolour='red'\n",
            &Simple::default(),
        )
        .expect_err("unknown key");
        assert!(unknown.join(" ").contains("colour"), "{unknown:?}");
    }

    #[test]
    fn due_windows_catch_up_and_start_with_the_latest() {
        let s = Schedules::parse(
            "[[report]]\nname='d'\ncron='0 6 * * *'\ntime_zone='Europe/Berlin'\nwindow='1d'\n",
            &Simple::default(),
        )
        .expect("valid");
        let d = &s.schedules[0];
        // 06:00 in Berlin is 05:00 UTC in winter.
        let now = utc("2026-12-03T12:00:00Z");
        assert_eq!(d.due(None, now), vec![utc("2026-12-03T05:00:00Z")]);
        assert_eq!(
            d.due(Some(utc("2026-12-01T05:00:00Z")), now),
            vec![utc("2026-12-02T05:00:00Z"), utc("2026-12-03T05:00:00Z")]
        );
        assert!(d.due(Some(utc("2026-12-03T05:00:00Z")), now).is_empty());
        let w = d.window_ending(utc("2026-12-03T05:00:00Z"));
        assert_eq!(w.start, utc("2026-12-02T05:00:00Z"));
        // A year down: only the newest MAX_CATCH_UP.
        let caught = d.due(Some(utc("2025-12-03T05:00:00Z")), now);
        assert_eq!(caught.len(), MAX_CATCH_UP);
        assert_eq!(caught.last(), Some(&utc("2026-12-03T05:00:00Z")));
    }

    #[test]
    fn daylight_saving_moves_the_utc_hour_not_the_local_one() {
        let s = Schedules::parse(
            "[[report]]\nname='d'\ncron='0 6 * * *'\ntime_zone='Europe/Berlin'\nwindow='1d'\n",
            &Simple::default(),
        )
        .expect("valid");
        let d = &s.schedules[0];
        let due = d.due(
            Some(utc("2026-03-28T05:00:00Z")),
            utc("2026-03-30T12:00:00Z"),
        );
        assert_eq!(
            due,
            vec![utc("2026-03-29T04:00:00Z"), utc("2026-03-30T04:00:00Z")]
        );
    }
}
