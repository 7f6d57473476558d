//! Many agents in one process, for benches and tests that play a fleet: each member is
//! the real `run` mode's sampler and sender ([`crate::run`], [`crate::sender`]) around
//! its own bounded [`crate::outbox::Outbox`], on a [`SyntheticTable`], with its own
//! gRPC connection (optionally from its own loopback source address), all on the
//! caller's tokio runtime. Only the table is made up; streaming, backoff, retry
//! pushback and resending are the agent's own code.
//!
//! A fleet of N holds N connections: the caller raises the open-file limit
//! (`RLIMIT_NOFILE`) and, past ~28,000 connections to one collector address, spreads
//! them over several source addresses ([`FleetConfig::source_addrs`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AgentError;
use crate::config::{Config, ConfigError};
use crate::probe::{Latency, Probe};
use crate::run::{self, Cycler, Shared};
use crate::sender::{self, Link};
use crate::synthetic::SyntheticTable;

/// What to play.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Every member's configuration (collector, interval, buffer, token); hostname,
    /// machine id and instance id are replaced per member.
    pub template: Config,
    /// Members.
    pub agents: usize,
    /// Sockets per member.
    pub sockets: usize,
    /// Fraction of each member's sockets replaced per cycle.
    pub churn: f64,
    /// Source addresses for the members' connections, used in turn (empty: the
    /// system's choice).
    pub source_addrs: Vec<IpAddr>,
    /// Members start evenly over this long (zero: all at once).
    pub ramp: Duration,
    /// Prefix of the members' hostnames and machine ids (`PREFIX-N`).
    pub name: String,
}

/// One member: what the fleet can observe of it.
pub struct Member {
    /// What its sender saw.
    pub probe: Arc<Probe>,
    shared: Arc<Shared>,
}

impl Member {
    /// Batches and bytes in its outbox (not yet acknowledged).
    pub fn outbox(&self) -> (usize, usize) {
        self.shared.outbox().len_bytes()
    }

    /// Batches its outbox dropped because it was full.
    pub fn dropped(&self) -> u64 {
        self.shared.outbox().dropped
    }
}

/// A running fleet.
pub struct Fleet {
    members: Vec<Member>,
    latency: Arc<Latency>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// The fleet summed at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStatus {
    /// Members.
    pub agents: usize,
    /// Members with a welcomed stream now.
    pub connected: usize,
    /// Members welcomed at least once.
    pub ever_connected: usize,
    /// Batches acknowledged.
    pub acks: u64,
    /// Socket records in acknowledged batches.
    pub rows: u64,
    /// Streams ended with a retry delay (shed).
    pub pushbacks: u64,
    /// Streams ended otherwise.
    pub other_ends: u64,
    /// Batches in every outbox.
    pub outbox_batches: usize,
    /// Bytes in every outbox.
    pub outbox_bytes: usize,
    /// The largest outbox, in bytes.
    pub max_outbox_bytes: usize,
    /// Batches dropped from full outboxes.
    pub dropped: u64,
}

impl Fleet {
    /// Starts every member (on the current tokio runtime; members start spread over
    /// `config.ramp`).
    pub fn start(config: FleetConfig) -> Result<Fleet, AgentError> {
        config.template.validate()?;
        let endpoints = config.template.endpoints().map_err(|e| {
            AgentError::Config(ConfigError {
                problems: vec![format!("--collector {}: {e}", config.template.collector)],
            })
        })?;
        let latency = Arc::new(Latency::default());
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let mut members = Vec::with_capacity(config.agents);
        for i in 0..config.agents {
            let probe = Arc::new(Probe::new(Arc::clone(&latency)));
            let shared = Arc::new(
                Shared::new(epoch, config.template.buffer_bytes).with_probe(Arc::clone(&probe)),
            );
            let mut identity = config.template.identity.clone();
            identity.hostname = format!("{}-{i}", config.name);
            identity.machine_id = format!("{}-machine-{i}", config.name);
            let mut endpoints = endpoints.clone();
            if !config.source_addrs.is_empty() {
                let from = config.source_addrs[i % config.source_addrs.len()];
                for (_, ep) in &mut endpoints {
                    *ep = ep.clone().local_address(Some(from));
                }
            }
            let link = Link {
                endpoints,
                token: config.template.token.clone(),
                identity,
                instance_id: format!("{}-{i}-{epoch}", config.name),
            };
            let source = SyntheticTable::new(i, config.sockets, config.churn);
            let cycler = Cycler::new(Box::new(source), config.template.time_wait);
            let delay = if config.agents > 1 {
                config.ramp.mul_f64(i as f64 / config.agents as f64)
            } else {
                Duration::ZERO
            };
            let (s, stop_m, interval, t) = (
                Arc::clone(&shared),
                stop.clone(),
                config.template.interval,
                tracker.clone(),
            );
            tracker.spawn(async move {
                tokio::select! {
                    _ = stop_m.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                t.spawn(run::sample_loop(
                    cycler,
                    interval,
                    Arc::clone(&s),
                    stop_m.clone(),
                ));
                t.spawn(sender::send_loop(link, s, stop_m));
            });
            members.push(Member { probe, shared });
        }
        Ok(Fleet {
            members,
            latency,
            stop,
            tracker,
        })
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Ack latency of every member (batch sent → Ack).
    pub fn latency(&self) -> &Arc<Latency> {
        &self.latency
    }

    /// The fleet summed now.
    pub fn status(&self) -> FleetStatus {
        let mut s = FleetStatus {
            agents: self.members.len(),
            ..FleetStatus::default()
        };
        for m in &self.members {
            let p = &m.probe;
            s.connected += usize::from(p.connected.load(Ordering::Relaxed));
            s.ever_connected += usize::from(p.connects.load(Ordering::Relaxed) > 0);
            s.acks += p.acks.load(Ordering::Relaxed);
            s.rows += p.rows.load(Ordering::Relaxed);
            s.pushbacks += p.pushbacks.load(Ordering::Relaxed);
            s.other_ends += p.other_ends.load(Ordering::Relaxed);
            let (n, bytes) = m.outbox();
            s.outbox_batches += n;
            s.outbox_bytes += bytes;
            s.max_outbox_bytes = s.max_outbox_bytes.max(bytes);
            s.dropped += m.dropped();
        }
        s
    }

    /// Stops every member: each drains its live stream for up to `grace`, then what is
    /// left is abandoned. Returns the batches still unacknowledged.
    pub async fn stop(self, grace: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        self.members.iter().map(|m| m.outbox().0).sum()
    }
}
