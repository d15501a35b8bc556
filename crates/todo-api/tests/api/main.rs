//! Integration tests of the TODO API over real HTTP, each against its own SQLite file.
//! `tests/api_mariadb` runs the same suites (crud, paging, validation, contract, openapi) against
//! a real MariaDB primary and replica.

mod cluster;
mod contract;
mod crud;
mod database;
mod helpers;
mod openapi;
mod paging;
mod validation;

const BACKEND: helpers::Backend = helpers::Backend::Sqlite;
