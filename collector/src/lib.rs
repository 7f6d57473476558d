//! finwait-collector
