//! The words of finwait's domain, spelled once: TCP states (every spelling `ss`
//! accepts), kernel timer kinds, leak verdicts and confidences, the duration and
//! instant grammar, the answer types of the query API, and what each state and
//! verdict means, who is at fault and what fixes it ([`explain`]), and the trend
//! report's document ([`report`]).
//!
//! The agent's printers, the collector's query layer and the `finwait` CLI all use
//! these types, so a spelling one of them accepts, the others accept too, and the
//! JSON the collector writes is read back by the CLI into the very same types. The
//! crate depends on nothing but serde and chrono: no database, no gRPC.

pub mod answer;
pub mod explain;
pub mod report;
pub mod state;
pub mod time;
pub mod timer;
pub mod verdict;

pub use state::TcpState;
pub use timer::TimerKind;
pub use verdict::{Confidence, GroupBy, LeakKind};
