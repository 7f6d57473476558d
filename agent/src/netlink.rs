//! Reads the TCP socket table through netlink sock_diag (INET_DIAG), the interface
//! `ss` uses: one dump request per address family, all states.
//!
//! The request encoder and the response decoder are plain byte code over the kernel's
//! `struct inet_diag_req_v2` / `struct inet_diag_msg` layouts (linux/inet_diag.h), so
//! they are tested against captured bytes. We decode ourselves rather than through
//! netlink-packet-sock-diag because that crate narrows the inode, drops TIME_WAIT
//! timer expiry and fails on small buffers; the socket calls go through rustix, so no
//! `unsafe` is needed anywhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::socket::{Socket, TcpState, Timer, TimerKind};

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `sizeof(struct inet_diag_msg)`.
const DIAG_MSG_LEN: usize = 72;
/// Receive buffer: the kernel fills at most 32 KiB per dump message batch; more room
/// costs nothing and protects against truncation.
const RECV_BUF_LEN: usize = 64 * 1024;

/// Address family of a dump request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// AF_INET.
    V4,
    /// AF_INET6 (includes IPv4-mapped sockets of dual-stack listeners and clients).
    V6,
}

impl Family {
    fn af(self) -> u8 {
        match self {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        }
    }
}

/// What can go wrong talking to sock_diag.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused the socket or the request (no sock_diag, seccomp, EPERM ...).
    #[error("netlink sock_diag unavailable: {0}")]
    Unavailable(#[source] std::io::Error),
    /// I/O failed mid-dump.
    #[error("netlink dump failed: {0}")]
    Io(#[source] std::io::Error),
    /// The kernel answered with an error message.
    #[error("netlink dump refused by the kernel: errno {0}")]
    Kernel(i32),
    /// The bytes did not match the kernel's layout.
    #[error("malformed netlink message: {0}")]
    Malformed(&'static str),
}

/// One decoded `struct inet_diag_msg`, before it becomes a [`Socket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagMsg {
    /// `idiag_family`.
    pub family: u8,
    /// `idiag_state` (kernel numbering).
    pub state: u8,
    /// `idiag_timer`.
    pub timer: u8,
    /// `idiag_retrans`.
    pub retrans: u8,
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// `idiag_cookie`, both halves joined.
    pub cookie: u64,
    /// `idiag_expires` in milliseconds.
    pub expires_ms: u32,
    /// `idiag_rqueue`.
    pub rqueue: u32,
    /// `idiag_wqueue`.
    pub wqueue: u32,
    /// `idiag_uid`.
    pub uid: u32,
    /// `idiag_inode`.
    pub inode: u32,
}

impl DiagMsg {
    /// Converts to the domain type; `None` for a state number the kernel should never
    /// send (counted by the caller).
    pub fn to_socket(self, netns: u64) -> Option<Socket> {
        let state = TcpState::from_kernel(self.state)?;
        Some(Socket {
            netns,
            cookie: Some(self.cookie),
            state,
            local: self.local,
            remote: self.remote,
            inode: u64::from(self.inode),
            uid: self.uid,
            rx_queue: self.rqueue,
            tx_queue: self.wqueue,
            timer: TimerKind::from_kernel(self.timer).map(|kind| Timer {
                kind,
                expires_ms: self.expires_ms,
                retransmits: self.retrans,
            }),
            owners: std::sync::Arc::default(),
        })
    }
}

/// Encodes one `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets in `states`.
pub fn encode_request(family: Family, states: u32, seq: u32) -> [u8; NLMSG_HDR_LEN + 56] {
    let mut b = [0u8; NLMSG_HDR_LEN + 56];
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid stays 0: the kernel.
    b[16] = family.af();
    b[17] = IPPROTO_TCP;
    // idiag_ext = 0: no extensions needed; pad = 0.
    b[20..24].copy_from_slice(&states.to_ne_bytes());
    // inet_diag_sockid stays zero: no filter.
    b
}

/// Outcome of decoding one received buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The dump goes on: receive again.
    More,
    /// `NLMSG_DONE` seen.
    Done,
}

fn ne_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr(family: u8, b: &[u8]) -> Result<IpAddr, NetlinkError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_INET6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(NetlinkError::Malformed("unknown address family")),
    }
}

/// Decodes one `struct inet_diag_msg` payload (attributes after it are ignored).
pub fn decode_diag_msg(p: &[u8]) -> Result<DiagMsg, NetlinkError> {
    if p.len() < DIAG_MSG_LEN {
        return Err(NetlinkError::Malformed(
            "inet_diag_msg shorter than 72 bytes",
        ));
    }
    let family = p[0];
    // inet_diag_sockid starts at 4: sport(2) dport(2) src(16) dst(16) if(4) cookie(8).
    let sport = be_u16(p, 4);
    let dport = be_u16(p, 6);
    let local = SocketAddr::new(addr(family, &p[8..24])?, sport);
    let remote = SocketAddr::new(addr(family, &p[24..40])?, dport);
    let cookie = u64::from(ne_u32(p, 44)) | (u64::from(ne_u32(p, 48)) << 32);
    Ok(DiagMsg {
        family,
        state: p[1],
        timer: p[2],
        retrans: p[3],
        local,
        remote,
        cookie,
        expires_ms: ne_u32(p, 52),
        rqueue: ne_u32(p, 56),
        wqueue: ne_u32(p, 60),
        uid: ne_u32(p, 64),
        inode: ne_u32(p, 68),
    })
}

/// Walks every netlink message in one received buffer, handing each socket record's
/// raw `struct inet_diag_msg` payload (attributes included) to `f` undecoded; checks
/// lengths, errors and the end of the dump.
pub fn for_each_record(
    mut buf: &[u8],
    f: &mut impl FnMut(&[u8]) -> Result<(), NetlinkError>,
) -> Result<Progress, NetlinkError> {
    while buf.len() >= NLMSG_HDR_LEN {
        let len = ne_u32(buf, 0) as usize;
        let kind = ne_u16(buf, 4);
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Err(NetlinkError::Malformed(
                "netlink message length out of bounds",
            ));
        }
        let payload = &buf[NLMSG_HDR_LEN..len];
        match kind {
            NLMSG_DONE => {
                // Since Linux 4.x DONE carries the dump's final error code.
                if payload.len() >= 4 {
                    let code = ne_u32(payload, 0) as i32;
                    if code < 0 {
                        return Err(NetlinkError::Kernel(-code));
                    }
                }
                return Ok(Progress::Done);
            }
            NLMSG_ERROR => {
                if payload.len() < 4 {
                    return Err(NetlinkError::Malformed("short NLMSG_ERROR"));
                }
                let code = ne_u32(payload, 0) as i32;
                if code != 0 {
                    return Err(NetlinkError::Kernel(-code));
                }
            }
            NLMSG_NOOP => {}
            SOCK_DIAG_BY_FAMILY => f(payload)?,
            _ => return Err(NetlinkError::Malformed("unexpected netlink message type")),
        }
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    Ok(Progress::More)
}

/// Decodes every netlink message in one received buffer, handing each socket to `f`.
pub fn decode_buffer(buf: &[u8], f: &mut impl FnMut(DiagMsg)) -> Result<Progress, NetlinkError> {
    for_each_record(buf, &mut |p| {
        f(decode_diag_msg(p)?);
        Ok(())
    })
}

/// A sock_diag netlink socket, bound to the network namespace it was created in.
#[derive(Debug)]
pub struct DiagSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl DiagSocket {
    /// Opens a sock_diag socket in the calling thread's network namespace.
    pub fn open() -> Result<DiagSocket, NetlinkError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )
        .map_err(|e| NetlinkError::Unavailable(e.into()))?;
        Ok(DiagSocket {
            fd,
            seq: 0,
            buf: vec![0u8; RECV_BUF_LEN],
        })
    }

    /// Dumps every TCP socket of `family` in all states, handing raw messages to `f`.
    pub fn dump(
        &mut self,
        family: Family,
        f: &mut impl FnMut(DiagMsg),
    ) -> Result<(), NetlinkError> {
        self.dump_raw(family, &mut |bytes| decode_buffer(bytes, f))
    }

    /// Dumps `family`, handing each received buffer to `f` (used to capture fixtures).
    pub fn dump_raw(
        &mut self,
        family: Family,
        f: &mut impl FnMut(&[u8]) -> Result<Progress, NetlinkError>,
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let req = encode_request(family, TcpState::ALL_KERNEL_MASK, self.seq);
        let kernel = SocketAddrNetlink::new(0, 0);
        rustix::net::sendto(&self.fd, &req, SendFlags::empty(), &kernel)
            .map_err(|e| NetlinkError::Unavailable(e.into()))?;
        loop {
            // MSG_TRUNC makes recv report the datagram's full length, so truncation shows.
            let (n, full) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC)
                .map_err(|e| NetlinkError::Io(e.into()))?;
            if full > n {
                return Err(NetlinkError::Malformed("netlink message truncated"));
            }
            if f(&self.buf[..n])? == Progress::Done {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_kernel_layout() {
        let r = encode_request(Family::V6, TcpState::ALL_KERNEL_MASK, 7);
        assert_eq!(ne_u32(&r, 0), 72);
        assert_eq!(ne_u16(&r, 4), SOCK_DIAG_BY_FAMILY);
        assert_eq!(ne_u16(&r, 6), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(ne_u32(&r, 8), 7);
        assert_eq!((r[16], r[17]), (AF_INET6, IPPROTO_TCP));
        assert_eq!(ne_u32(&r, 20), 0x1ffe);
        assert!(r[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn truncated_message_is_an_error_not_a_panic() {
        let mut b = vec![0u8; 20];
        b[0..4].copy_from_slice(&200u32.to_ne_bytes());
        assert!(matches!(
            decode_buffer(&b, &mut |_| {}),
            Err(NetlinkError::Malformed(_))
        ));
        let mut b = vec![0u8; 16 + 10];
        b[0..4].copy_from_slice(&26u32.to_ne_bytes());
        b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(decode_buffer(&b, &mut |_| {}).is_err());
    }

    #[test]
    fn kernel_error_is_reported_with_errno() {
        let mut b = vec![0u8; 20];
        b[0..4].copy_from_slice(&20u32.to_ne_bytes());
        b[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b[16..20].copy_from_slice(&(-13i32).to_ne_bytes());
        assert!(matches!(
            decode_buffer(&b, &mut |_| {}),
            Err(NetlinkError::Kernel(13))
        ));
    }
}
