//! video-streaming over real HTTP on loopback, in front of a real video-storage on a temp
//! directory, with clips made by ffmpeg; the pages in headless Chromium.

mod api;
mod browser;
mod config;
mod helpers;
