//! finwait-collector: receives agents' socket tables over gRPC (finwait.v1.Ingest),
//! validates them at the edge, and stores socket lifetimes in PostgreSQL: open ones in
//! `current_sockets`, ended ones in the time-partitioned `socket_lifetimes`.

pub mod api;
pub mod app;
pub mod auth;
pub mod budget;
pub mod config;
pub mod conn_limit;
pub mod copy_rows;
pub mod dashboard;
pub mod db_health;
pub mod distribution;
pub mod error;
pub mod inbound;
pub mod ingest;
pub mod ingest_server;
pub mod init;
pub mod metrics;
pub mod model;
pub mod pair_key;
pub mod postgres;
pub mod query;
pub mod query_service;
pub mod reload;
pub mod report;
pub mod service;
pub mod shed;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validate;
pub mod wire_budget;
