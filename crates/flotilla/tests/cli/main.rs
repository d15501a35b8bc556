//! The `flotilla` binary as a user runs it: real processes, signals, exit codes, logs.

mod advertise;
mod chaos;
mod gateway;
mod helpers;
mod lifecycle;
mod startup;
mod tracing;
mod up;
