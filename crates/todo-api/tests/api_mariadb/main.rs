//! The TODO API against a real MariaDB primary and replica, started by `scripts/db/mariadb.sh`:
//! the same suites as on SQLite (crud, paging, validation, contract, openapi), each test in a
//! database of its own on a shared cluster, and the replication behaviour, each test on a
//! cluster of its own that it may stop and start.

#[path = "../api/bad_input.rs"]
mod bad_input;
#[path = "../api/cluster.rs"]
mod cluster;
#[path = "../api/conditional.rs"]
mod conditional;
#[path = "../api/contract.rs"]
mod contract;
#[path = "../api/crud.rs"]
mod crud;
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/openapi.rs"]
mod openapi;
#[path = "../api/paging.rs"]
mod paging;
mod replication;
#[path = "../api/schemathesis.rs"]
mod schemathesis;
#[path = "../api/validation.rs"]
mod validation;

const BACKEND: helpers::Backend = helpers::Backend::MariaDb;
