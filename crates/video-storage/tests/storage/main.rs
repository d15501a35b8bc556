//! video-storage over real HTTP on loopback: a local directory in a temp dir, and Azure Blob
//! through Azurite (Microsoft's emulator, started by the test).

mod azure;
mod config;
mod helpers;
mod local;
mod s3;
mod uploads;
