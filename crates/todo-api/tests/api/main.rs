//! Integration tests of the TODO API over real HTTP, each against its own SQLite file.
//! `tests/api_mariadb` runs the same suites (crud, paging, validation, contract, openapi) against
//! a real MariaDB primary and replica.

mod bad_input;
mod cluster;
mod conditional;
mod contract;
mod crud;
mod database;
mod helpers;
mod openapi;
mod paging;
mod schemathesis;
mod validation;

const BACKEND: helpers::Backend = helpers::Backend::Sqlite;
