//! Decoding a socket's columns from a result row into the API's socket view
//! ([`finwait_vocab::answer::Socket`]), shared by `sockets` and `who`.

use finwait_vocab::answer::{Owner, Socket};
use finwait_vocab::{TcpState, TimerKind};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// Decodes the columns named `{prefix}hostname`, `{prefix}netns`, ... (see
/// `sql/sockets.sql`); `None` when `{prefix}hostname` is null (an unmatched side).
pub fn socket_from_row(row: &PgRow, prefix: &str) -> Result<Option<Socket>, sqlx::Error> {
    let c = Cols { row, prefix };
    let Some(host) = c.get::<Option<String>>("hostname")? else {
        return Ok(None);
    };
    let owners = c.owners()?;
    let first = owners.first();
    let (service, container) = c.service(first)?;
    Ok(Some(Socket {
        host,
        netns: c.get("netns")?,
        state: c.state()?,
        local: c.endpoint("local")?,
        remote: c.endpoint("remote")?,
        pid: first.map(|o| o.pid),
        comm: first.map(|o| o.comm.clone()),
        cmdline: first.map(|o| o.cmdline.clone()),
        fd: first.map(|o| o.fd),
        service,
        container,
        since: c.get("first_seen")?,
        age_s: c.get("age_s")?,
        rx_queue: c.get("rx_queue")?,
        tx_queue: c.get("tx_queue")?,
        inode: c.get("inode")?,
        uid: c.get("uid")?,
        timer: TimerKind::from_number(c.get("timer")?),
        until: c.get("ended")?,
        owners,
    }))
}

/// The columns of one side of a result row: `{prefix}{name}`.
pub(crate) struct Cols<'r> {
    /// The row.
    pub row: &'r PgRow,
    /// Prepended to every column name.
    pub prefix: &'r str,
}

impl Cols<'_> {
    /// Column `{prefix}{name}`.
    pub fn get<'a, T>(&'a self, name: &str) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row.try_get(format!("{}{name}", self.prefix).as_str())
    }

    /// `addr:port` from `{prefix}{which}_addr` (text) and `{prefix}{which}_port`.
    pub fn endpoint(&self, which: &str) -> Result<String, sqlx::Error> {
        Ok(endpoint(
            &self.get::<String>(&format!("{which}_addr"))?,
            self.get(&format!("{which}_port"))?,
        ))
    }

    /// The holders in `{prefix}owners` (none when the JSON is not an owner list).
    pub fn owners(&self) -> Result<Vec<Owner>, sqlx::Error> {
        let owners: serde_json::Value = self.get("owners")?;
        Ok(serde_json::from_value(owners).unwrap_or_default())
    }

    /// The state in `{prefix}state`.
    pub fn state(&self) -> Result<TcpState, sqlx::Error> {
        let n: i16 = self.get("state")?;
        TcpState::from_number(n).ok_or_else(|| {
            sqlx::Error::Decode(format!("stored state {n} is not a TCP state").into())
        })
    }

    /// Service and container: the first holder's, else the namespace's
    /// (`{prefix}ns_service`, `{prefix}ns_container`).
    pub fn service(
        &self,
        first: Option<&Owner>,
    ) -> Result<(Option<String>, Option<String>), sqlx::Error> {
        if let Some(o) = first.filter(|o| o.service.is_some()) {
            return Ok((o.service.clone(), o.container.clone()));
        }
        Ok((self.get("ns_service")?, self.get("ns_container")?))
    }
}

/// `addr:port`, IPv6 as `[addr]:port`.
pub fn endpoint(addr: &str, port: i32) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(endpoint("fd77::a", 80), "[fd77::a]:80");
    }
}
