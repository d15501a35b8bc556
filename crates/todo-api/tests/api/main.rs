//! Integration tests of the TODO API over real HTTP, each against its own SQLite file.

mod contract;
mod crud;
mod database;
mod helpers;
mod openapi;
mod paging;
mod validation;
