//! The gateway in process, in front of real HTTP backends on loopback ports.

mod balancing;
mod edge;
mod helpers;
mod proxying;
mod tls;
