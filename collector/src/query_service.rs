//! The gRPC `finwait.v1.Query` service: request fields become the HTTP API's named
//! parameters and go through the same parsing and queries ([`crate::query`]); answers
//! become messages. Same values accepted, same messages on errors, same answers.

use chrono::{DateTime, Utc};
use finwait_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::{self, LiveTokens};
use crate::query::fleet::FleetQuery;
use crate::query::groups::GroupsQuery;
use crate::query::hosts::HostsQuery;
use crate::query::leaks::LeakQuery;
use crate::query::reports::{Rendered, ReportQuery, ReportsQuery, RunReportQuery};
use crate::query::sockets::SocketsQuery;
use crate::query::timeline::TimelineQuery;
use crate::query::who::WhoQuery;
use crate::query::{self, Context, Params, QueryError, Question};
use finwait_vocab::answer::{
    Coverage, Host, Leak, LeakGroup, Owner, Side, Socket, TimeWaitPressure,
};

/// The service.
#[derive(Clone)]
pub struct QueryService {
    ctx: Context,
    tokens: Option<LiveTokens>,
}

impl QueryService {
    /// Serves `ctx` to holders of a read token; `tokens` as for the HTTP API (`None`:
    /// open, `--insecure-loopback` without a tokens file).
    pub fn new(ctx: Context, tokens: Option<LiveTokens>) -> QueryService {
        QueryService { ctx, tokens }
    }

    /// Token, the request's fields as question `Q`'s parameters, the answer.
    async fn answer<Q: Question, T>(
        &self,
        req: &Request<T>,
        mut fields: Vec<(&str, String)>,
        page: Option<&pb::Page>,
    ) -> Result<Q::Answer, Status> {
        let set = self.tokens.as_ref().map(LiveTokens::current);
        auth::check(
            set.as_deref(),
            auth::presented(req.metadata()),
            auth::Role::Read,
        )
        .map_err(|r| status(r.into()))?;
        fields.extend(page_fields(page));
        let p = Params::from_fields(fields, Q::PARAMS).map_err(status)?;
        query::ask::<Q>(&p, &self.ctx).await.map_err(status)
    }
}

/// The status a client sees for `e`, logged at the level its code deserves.
fn status(e: QueryError) -> Status {
    e.code.log("grpc", &e.message);
    e.code.status(e.message)
}

fn page_fields(page: Option<&pb::Page>) -> [(&'static str, String); 2] {
    let (limit, token) = page.map_or((0, String::new()), |p| (p.limit, p.page_token.clone()));
    [
        (
            "limit",
            if limit == 0 {
                String::new()
            } else {
                limit.to_string()
            },
        ),
        ("page_token", token),
    ]
}

fn num(n: u32) -> String {
    if n == 0 { String::new() } else { n.to_string() }
}

fn ms(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(0, |t| t.timestamp_millis())
}

fn token(t: Option<String>) -> String {
    t.unwrap_or_default()
}

fn owner(o: Owner) -> pb::OwnerView {
    pb::OwnerView {
        pid: o.pid,
        fd: o.fd,
        comm: o.comm,
        cmdline: o.cmdline,
        service: o.service.unwrap_or_default(),
        container: o.container.unwrap_or_default(),
    }
}

fn coverage(c: Coverage) -> pb::Coverage {
    pb::Coverage {
        at_ms: c.at.timestamp_millis(),
        complete: c.complete,
        problems: c.problems,
        source: c.source,
        processes_scanned: c.processes_scanned,
        processes_unreadable: c.processes_unreadable,
        processes_vanished: c.processes_vanished,
        sockets_without_owner: c.sockets_without_owner,
        namespaces_read: c.namespaces_read,
        namespaces_skipped: c
            .namespaces_skipped
            .into_iter()
            .map(|n| pb::NamespaceSkipView {
                netns: n.netns as u64,
                reason: n.reason,
            })
            .collect(),
        capabilities_missing: c.capabilities_missing,
        agent_uid: c.agent_uid.unwrap_or(-1),
        dump_ms: c.dump_ms,
        owner_scan_ms: c.owner_scan_ms,
        batches_dropped: c.batches_dropped,
    }
}

fn socket(s: Socket) -> pb::SocketView {
    pb::SocketView {
        host: s.host,
        netns: s.netns as u64,
        state: s.state.name().into(),
        local: s.local,
        remote: s.remote,
        owners: s.owners.into_iter().map(owner).collect(),
        since_ms: s.since.timestamp_millis(),
        age_s: s.age_s,
        rx_queue: s.rx_queue,
        tx_queue: s.tx_queue,
        inode: s.inode as u64,
        uid: s.uid as u64,
        timer: s.timer.map_or_else(String::new, |t| t.name().into()),
        until_ms: ms(s.until),
        service: s.service.unwrap_or_default(),
        container: s.container.unwrap_or_default(),
    }
}

fn side(s: Side) -> pb::LeakSide {
    pb::LeakSide {
        host: s.host,
        netns: s.netns as u64,
        pid: s.pid.unwrap_or(0),
        comm: s.comm.unwrap_or_default(),
        cmdline: s.cmdline.unwrap_or_default(),
        fd: s.fd.unwrap_or(0),
        state: s.state.name().into(),
        local: s.local,
        remote: s.remote,
        since_ms: s.since.timestamp_millis(),
        age_s: s.age_s,
        rx_queue: s.rx_queue,
        until_ms: ms(s.until),
        service: s.service.unwrap_or_default(),
        container: s.container.unwrap_or_default(),
    }
}

fn leak(l: Leak) -> pb::Leak {
    pb::Leak {
        kind: l.kind.name().into(),
        confidence: l.confidence.name().into(),
        holder: Some(side(l.holder)),
        peer: l.peer.map(side),
        until_ms: ms(l.until),
        hint: l.hint,
    }
}

fn pressure(p: TimeWaitPressure) -> pb::TimeWaitPressure {
    pb::TimeWaitPressure {
        host: p.host,
        local_addr: p.local_addr,
        remote: p.remote,
        count: p.count,
        ports: p.ports,
        ratio: p.ratio,
        at_ms: p.at.timestamp_millis(),
    }
}

fn host(h: Host) -> pb::HostSummary {
    pb::HostSummary {
        hostname: h.hostname,
        machine_id: h.machine_id,
        agent_version: h.agent_version,
        last_seen_ms: ms(h.last_seen),
        labels: h.labels.into_iter().collect(),
        states: h
            .states
            .into_iter()
            .map(|(k, v)| (k.name().to_owned(), v))
            .collect(),
        ephemeral_low: h.ephemeral_ports.low as u32,
        ephemeral_high: h.ephemeral_ports.high as u32,
        time_wait_pressure: h.time_wait_pressure.map(pressure),
        coverage: h.coverage.map(coverage),
        reporting: h.reporting,
    }
}

fn group(g: LeakGroup) -> pb::LeakGroup {
    pb::LeakGroup {
        host: g.host.unwrap_or_default(),
        hosts: g.hosts,
        service: g.service.unwrap_or_default(),
        pid: g.pid.unwrap_or(0),
        comm: g.comm.unwrap_or_default(),
        cmdline: g.cmdline.unwrap_or_default(),
        kind: g.kind.name().into(),
        count: g.count,
        open: g.open,
        oldest_ms: g.oldest.timestamp_millis(),
        newest_ms: g.newest.timestamp_millis(),
        ended_ms: ms(g.ended),
        growth_per_hour: g.growth_per_hour,
        peers: g
            .peers
            .into_iter()
            .map(|p| pb::PeerCount {
                host: p.host,
                count: p.count,
                service: p.service.unwrap_or_default(),
            })
            .collect(),
        hint: g.hint,
    }
}

fn body(r: Rendered) -> pb::ReportBody {
    pb::ReportBody {
        format: r.format.name().to_owned(),
        content_type: r.format.content_type().to_owned(),
        body: r.body,
    }
}

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    async fn hosts(
        &self,
        req: Request<pb::HostsRequest>,
    ) -> Result<Response<pb::HostsResponse>, Status> {
        let a = self
            .answer::<HostsQuery, _>(
                &req,
                vec![("host", req.get_ref().host.clone())],
                req.get_ref().page.as_ref(),
            )
            .await?;
        Ok(Response::new(pb::HostsResponse {
            hosts: a.hosts.into_iter().map(host).collect(),
            next_page_token: token(a.next_page_token),
        }))
    }

    async fn sockets(
        &self,
        req: Request<pb::SocketsRequest>,
    ) -> Result<Response<pb::SocketsResponse>, Status> {
        let r = req.get_ref();
        let fields = vec![
            ("host", r.host.clone()),
            ("state", r.state.clone()),
            ("port", num(r.port)),
            ("pid", num(r.pid)),
            ("process", r.process.clone()),
            ("service", r.service.clone()),
            ("at", r.at.clone()),
        ];
        let a = self
            .answer::<SocketsQuery, _>(&req, fields, r.page.as_ref())
            .await?;
        Ok(Response::new(pb::SocketsResponse {
            host: a.host,
            as_of_ms: ms(a.as_of),
            sockets: a.sockets.into_iter().map(socket).collect(),
            next_page_token: token(a.next_page_token),
        }))
    }

    async fn leaks(
        &self,
        req: Request<pb::LeaksRequest>,
    ) -> Result<Response<pb::LeaksResponse>, Status> {
        let r = req.get_ref();
        let fields = vec![
            ("since", r.since.clone()),
            ("min_age", r.min_age.clone()),
            ("host", r.host.clone()),
            ("process", r.process.clone()),
            ("service", r.service.clone()),
            ("kind", r.kind.clone()),
            ("confidence", r.confidence.clone()),
        ];
        let a = self
            .answer::<LeakQuery, _>(&req, fields, r.page.as_ref())
            .await?;
        Ok(Response::new(pb::LeaksResponse {
            leaks: a.leaks.into_iter().map(leak).collect(),
            time_wait_pressure: a.time_wait_pressure.into_iter().map(pressure).collect(),
            next_page_token: token(a.next_page_token),
        }))
    }

    async fn leak_groups(
        &self,
        req: Request<pb::LeakGroupsRequest>,
    ) -> Result<Response<pb::LeakGroupsResponse>, Status> {
        let r = req.get_ref();
        let fields = vec![
            ("since", r.since.clone()),
            ("min_age", r.min_age.clone()),
            ("host", r.host.clone()),
            ("process", r.process.clone()),
            ("service", r.service.clone()),
            ("by", r.by.clone()),
        ];
        let a = self
            .answer::<GroupsQuery, _>(&req, fields, r.page.as_ref())
            .await?;
        Ok(Response::new(pb::LeakGroupsResponse {
            groups: a.groups.into_iter().map(group).collect(),
            next_page_token: token(a.next_page_token),
        }))
    }

    async fn who(&self, req: Request<pb::WhoRequest>) -> Result<Response<pb::WhoResponse>, Status> {
        let r = req.get_ref();
        let fields = vec![("endpoint", r.endpoint.clone()), ("at", r.at.clone())];
        let a = self
            .answer::<WhoQuery, _>(&req, fields, r.page.as_ref())
            .await?;
        Ok(Response::new(pb::WhoResponse {
            endpoint: a.endpoint,
            as_of_ms: ms(a.as_of),
            connections: a
                .connections
                .into_iter()
                .map(|c| pb::Connection {
                    local: c.local.map(socket),
                    remote: c.remote.map(socket),
                })
                .collect(),
            next_page_token: token(a.next_page_token),
        }))
    }

    async fn timeline(
        &self,
        req: Request<pb::TimelineRequest>,
    ) -> Result<Response<pb::TimelineResponse>, Status> {
        let r = req.get_ref();
        let fields = vec![
            ("host", r.host.clone()),
            ("since", r.since.clone()),
            ("until", r.until.clone()),
            ("step", r.step.clone()),
        ];
        let a = self
            .answer::<TimelineQuery, _>(&req, fields, r.page.as_ref())
            .await?;
        Ok(Response::new(pb::TimelineResponse {
            host: a.host,
            step_s: a.step_s,
            points: a
                .points
                .into_iter()
                .map(|p| pb::TimelinePoint {
                    t_ms: p.t.timestamp_millis(),
                    states: p
                        .states
                        .into_iter()
                        .map(|(k, v)| (k.name().to_owned(), v))
                        .collect(),
                })
                .collect(),
            next_page_token: token(a.next_page_token),
        }))
    }

    async fn reports(
        &self,
        req: Request<pb::ReportsRequest>,
    ) -> Result<Response<pb::ReportsResponse>, Status> {
        let r = req.get_ref();
        let fields = vec![("schedule", r.schedule.clone())];
        let a = self
            .answer::<ReportsQuery, _>(&req, fields, r.page.as_ref())
            .await?;
        Ok(Response::new(pb::ReportsResponse {
            reports: a
                .reports
                .into_iter()
                .map(|e| pb::ReportSummary {
                    id: e.id,
                    schedule: e.schedule,
                    window_start_ms: e.window.start.timestamp_millis(),
                    window_end_ms: e.window.end.timestamp_millis(),
                    generated_at_ms: e.generated_at.timestamp_millis(),
                    baseline: e.baseline,
                    changed: e.changed,
                    new: e.now.new,
                    ongoing: e.now.ongoing,
                    resolved: e.now.resolved,
                    open_at_end: e.now.open_at_end,
                    socket_hours: e.now.socket_hours,
                    hosts_affected: e.now.hosts_affected,
                    deliveries: e.deliveries.into_iter().collect(),
                })
                .collect(),
            next_page_token: token(a.next_page_token),
        }))
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportBody>, Status> {
        let r = req.get_ref();
        let fields = vec![("id", r.id.to_string()), ("format", r.format.clone())];
        let a = self.answer::<ReportQuery, _>(&req, fields, None).await?;
        Ok(Response::new(body(a)))
    }

    async fn run_report(
        &self,
        req: Request<pb::RunReportRequest>,
    ) -> Result<Response<pb::ReportBody>, Status> {
        let r = req.get_ref();
        let fields = vec![
            ("since", r.since.clone()),
            ("window", r.window.clone()),
            ("host", r.hosts.join(",")),
            ("service", r.services.join(",")),
            ("time_zone", r.time_zone.clone()),
            ("format", r.format.clone()),
        ];
        let a = self.answer::<RunReportQuery, _>(&req, fields, None).await?;
        Ok(Response::new(body(a)))
    }

    async fn fleet(
        &self,
        req: Request<pb::FleetRequest>,
    ) -> Result<Response<pb::FleetResponse>, Status> {
        let r = req.get_ref();
        let fields = vec![
            ("since", r.since.clone()),
            ("until", r.until.clone()),
            ("step", r.step.clone()),
        ];
        let a = self
            .answer::<FleetQuery, _>(&req, fields, r.page.as_ref())
            .await?;
        Ok(Response::new(pb::FleetResponse {
            points: a
                .points
                .into_iter()
                .map(|p| pb::FleetPoint {
                    t_ms: p.t.timestamp_millis(),
                    states: p
                        .states
                        .into_iter()
                        .map(|(k, v)| (k.name().to_owned(), v))
                        .collect(),
                    hosts_reporting: p.hosts_reporting,
                    hosts_silent: p.hosts_silent,
                    open_leaks: p.open_leaks,
                })
                .collect(),
            step_s: a.step_s,
            next_page_token: token(a.next_page_token),
        }))
    }
}
