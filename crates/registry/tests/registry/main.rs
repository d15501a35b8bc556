//! The registry over real HTTP on loopback: Eureka's operations, bad input, leases, the watch,
//! peers, persistence, and services registering themselves.

mod clients;
mod gateway;
mod helpers;
mod operations;
mod peers;
mod self_registration;
