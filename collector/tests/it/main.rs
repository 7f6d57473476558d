//! Integration tests of finwait-collector against a real PostgreSQL (one cluster per
//! test binary, a database per test copied from a migrated template) and real gRPC
//! clients; the end-to-end tests run the real binaries in a private network namespace.
//! They need root (PostgreSQL runs as an unprivileged user, namespaces); without it
//! they fail saying so, unless FINWAIT_SKIP_ROOT_TESTS opts out (never under CI).

mod configfile;
mod connections;
mod correlation;
mod coverage;
mod dashboard;
mod deploy;
mod e2e;
mod faults;
mod fleet;
mod hostile;
mod hostile_api;
mod ingest;
mod leaks;
mod logging;
mod metrics;
mod nat;
mod nsclient;
mod outage;
mod overload;
mod pairkey;
mod reload;
mod reports;
mod roles;
mod samehost;
mod scaleout;
mod shedding;
mod spool;
mod support;
mod tls;
mod unlucky;
