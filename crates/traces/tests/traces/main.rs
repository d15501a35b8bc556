//! The trace collector over real HTTP: Zipkin's ingest and query API, bad input, retention and
//! persistence, and the real Zipkin clients (py_zipkin, zipkin-js) sending one trace together.

mod api;
mod clients;
mod helpers;
mod ui;
