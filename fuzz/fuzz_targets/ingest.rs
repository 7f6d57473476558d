//! Any bytes as one agent message through the collector's real decode and
//! validation ([`finwait_collector::inbound::read`]): it must never panic, and what
//! it accepts must hold no text PostgreSQL or a page would choke on and no value out
//! of range ([`finwait_collector::inbound::Inbound::breaches`]).
#![no_main]

use finwait_collector::inbound;
use finwait_collector::validate::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(accepted) = inbound::read(data, &Limits::default()) {
        let breaches = accepted.breaches();
        assert!(breaches.is_empty(), "accepted but unclean: {breaches:?}");
    }
});
