//! The gateway in process, in front of real HTTP backends on loopback ports.

mod balancing;
mod helpers;
mod proxying;
