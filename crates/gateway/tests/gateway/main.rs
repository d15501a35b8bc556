//! The gateway in process, in front of real HTTP backends on loopback ports.

mod balancing;
mod edge;
mod grammar;
mod helpers;
mod hostile;
mod proxying;
mod tls;
