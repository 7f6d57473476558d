//! Integration tests of finwait-agent: the real binary, real sockets made in private
//! network namespaces, compared with `ss`; and the `run` mode in-process (`app`). The
//! socket tests need root (namespaces, every process's descriptors); without it they
//! fail saying so, unless FINWAIT_SKIP_ROOT_TESTS opts out (never under CI).

mod app;
mod differential;
mod golden;
mod namespaces;
mod render;
mod spool;
mod support;
