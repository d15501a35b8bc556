//! `flotilla echo` over real HTTP, and the platform server behaviour it shares with every service.

mod helpers;
mod routes;
mod server;
