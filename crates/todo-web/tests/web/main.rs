//! The board in process, against a real TODO API on a temporary SQLite file, over HTTP; and in
//! Debian's headless Chromium.

mod board;
mod browser;
mod helpers;
