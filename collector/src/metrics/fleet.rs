//! The fleet gauges of `/metrics`: sockets by state and hosts reporting or silent from
//! the latest once-a-minute rollup (`fleet_minutes`, [`crate::query::fleet`]), and open
//! leaks by kind and by service, counted at the same cadence
//! (`sql/fleet_gauges.sql`). Refreshed by the maintenance task right after it writes
//! the rollup; replaced whole, so nothing stale lingers.
//!
//! Labels stay bounded: 11 states, 2 host statuses, 3 leak kinds, and at most
//! [`TOP_SERVICES`] services by open leaks plus `_other` (the rest summed) and `_none`
//! (holders with no service named).

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use finwait_vocab::{LeakKind, TcpState};
use sqlx::{PgPool, Row};

use super::registry::{Kind, header, label_set};

/// Services with the most open leaks that get a series of their own.
pub const TOP_SERVICES: usize = 20;
/// The series summing services outside the top list.
pub const OTHER_SERVICE: &str = "_other";
/// The series of holders whose service is not known.
pub const NO_SERVICE: &str = "_none";

/// One refresh's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSnapshot {
    /// The rollup minute these come from (`None`: no rollup yet).
    pub rollup_at: Option<DateTime<Utc>>,
    /// Sockets per state on reporting hosts (every state, zeros included).
    pub sockets: BTreeMap<&'static str, i64>,
    /// Hosts reporting.
    pub hosts_reporting: i64,
    /// Hosts known but silent.
    pub hosts_silent: i64,
    /// Open leaks per kind (every kind, zeros included).
    pub leaks: BTreeMap<&'static str, i64>,
    /// Open leaks per service: the top [`TOP_SERVICES`], `_other`, `_none`.
    pub services: BTreeMap<String, i64>,
}

/// The latest snapshot, shared by the maintenance task and `/metrics`.
#[derive(Debug, Default)]
pub struct FleetGauges(Mutex<Option<FleetSnapshot>>);

impl FleetGauges {
    /// Reads the latest rollup and counts open leaks, then replaces the snapshot.
    #[tracing::instrument(name = "fleet_gauges", skip_all, err)]
    pub async fn refresh(&self, pool: &PgPool, leak_threshold_s: f64) -> Result<(), sqlx::Error> {
        let mut snap = FleetSnapshot::default();
        for st in TcpState::ALL {
            snap.sockets.insert(st.name(), 0);
        }
        for k in LeakKind::ALL {
            snap.leaks.insert(k.name(), 0);
        }
        let latest = sqlx::query(
            "SELECT ts, states, hosts_reporting, hosts_silent FROM fleet_minutes ORDER BY ts DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        if let Some(row) = latest {
            snap.rollup_at = Some(row.try_get("ts")?);
            snap.hosts_reporting = i64::from(row.try_get::<i32, _>("hosts_reporting")?);
            snap.hosts_silent = i64::from(row.try_get::<i32, _>("hosts_silent")?);
            let states: serde_json::Value = row.try_get("states")?;
            for (k, v) in states.as_object().into_iter().flatten() {
                let st = k.parse().ok().and_then(TcpState::from_number);
                if let (Some(st), Some(n)) = (st, v.as_i64()) {
                    snap.sockets.insert(st.name(), n);
                }
            }
        }
        let rows = sqlx::query(include_str!("../sql/fleet_gauges.sql"))
            .bind(leak_threshold_s)
            .fetch_all(pool)
            .await?;
        let mut by_service: BTreeMap<Option<String>, i64> = BTreeMap::new();
        for row in &rows {
            let kind: String = row.try_get("kind")?;
            let n: i64 = row.try_get("n")?;
            if let Some(k) = LeakKind::ALL.iter().find(|k| k.name() == kind) {
                *snap.leaks.entry(k.name()).or_default() += n;
            }
            *by_service.entry(row.try_get("service")?).or_default() += n;
        }
        snap.services = top_services(by_service, TOP_SERVICES);
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snap);
        Ok(())
    }

    /// The latest snapshot, if any.
    pub fn snapshot(&self) -> Option<FleetSnapshot> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Writes the fleet families; before the first refresh only their headers.
    pub fn render(&self, out: &mut String) {
        let snap = self.snapshot();
        let families: [(&str, &str, &str); 5] = [
            (
                "finwait_fleet_sockets",
                "state",
                "Sockets on reporting hosts at the latest rollup minute, by TCP state",
            ),
            (
                "finwait_fleet_hosts",
                "status",
                "Hosts known to the collector at the latest rollup minute, by status: reporting or silent",
            ),
            (
                "finwait_fleet_open_leaks",
                "kind",
                "Open leaks on reporting hosts (held past --leak-threshold-seconds), by kind",
            ),
            (
                "finwait_fleet_service_open_leaks",
                "service",
                "Open leaks by the holder's service: the 20 services with most, _other for the rest summed, _none for holders without a service",
            ),
            (
                "finwait_fleet_rollup_timestamp_seconds",
                "",
                "Unix time of the rollup minute the fleet gauges come from",
            ),
        ];
        for (name, label, help) in families {
            header(out, name, Kind::Gauge, help);
            let Some(s) = &snap else { continue };
            let series: Vec<(&str, i64)> = match name {
                "finwait_fleet_sockets" => s.sockets.iter().map(|(k, v)| (*k, *v)).collect(),
                "finwait_fleet_hosts" => {
                    vec![("reporting", s.hosts_reporting), ("silent", s.hosts_silent)]
                }
                "finwait_fleet_open_leaks" => s.leaks.iter().map(|(k, v)| (*k, *v)).collect(),
                "finwait_fleet_service_open_leaks" => {
                    s.services.iter().map(|(k, v)| (k.as_str(), *v)).collect()
                }
                _ => {
                    if let Some(t) = s.rollup_at {
                        out.push_str(&format!("{name} {}\n", t.timestamp()));
                    }
                    continue;
                }
            };
            for (value, n) in series {
                let labels = label_set(&[(label, value)], None);
                out.push_str(&format!("{name}{labels} {n}\n"));
            }
        }
    }
}

/// The `keep` services with most leaks (ties by name), the rest summed under
/// [`OTHER_SERVICE`], unnamed ones under [`NO_SERVICE`]; empty counts dropped.
pub fn top_services(counts: BTreeMap<Option<String>, i64>, keep: usize) -> BTreeMap<String, i64> {
    let mut named: Vec<(String, i64)> = Vec::new();
    let mut out = BTreeMap::new();
    for (service, n) in counts {
        match service {
            Some(s) if !s.is_empty() => named.push((s, n)),
            _ => *out.entry(NO_SERVICE.to_owned()).or_default() += n,
        }
    }
    named.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: i64 = named.iter().skip(keep).map(|(_, n)| n).sum();
    out.extend(named.into_iter().take(keep));
    if rest > 0 {
        *out.entry(OTHER_SERVICE.to_owned()).or_default() += rest;
    }
    out.retain(|_, n| *n > 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_beyond_the_top_are_summed_and_unnamed_ones_kept_apart() {
        let mut c = BTreeMap::new();
        c.insert(Some("a.service".to_owned()), 5);
        c.insert(Some("b.service".to_owned()), 9);
        c.insert(Some("c.service".to_owned()), 1);
        c.insert(Some("d.service".to_owned()), 2);
        c.insert(None, 4);
        c.insert(Some(String::new()), 1);
        let top = top_services(c, 2);
        let want: BTreeMap<String, i64> = [
            ("b.service", 9),
            ("a.service", 5),
            ("_other", 3),
            ("_none", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(top, want);
    }

    #[test]
    fn before_the_first_refresh_only_headers_are_written() {
        let g = FleetGauges::default();
        let mut out = String::new();
        g.render(&mut out);
        assert!(out.contains("# TYPE finwait_fleet_sockets gauge\n"));
        assert!(!out.lines().any(|l| !l.starts_with('#')), "{out}");
    }
}
