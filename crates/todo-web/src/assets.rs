//! The board's static files, built into the binary and served under content-hashed names, so
//! browsers and the gateway can cache them forever and a new version is a new URL.

use std::path::Path;
use std::sync::OnceLock;

use axum::extract::Path as UrlPath;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub struct Asset {
    /// `app.3f2a9c81d0e4.css`
    pub name: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

const FILES: [(&str, &str, &str, &[u8]); 3] = [
    (
        "app",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "icon",
        "svg",
        "image/svg+xml",
        include_bytes!("../assets/icon.svg"),
    ),
];

pub fn all() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|(stem, ext, content_type, bytes)| Asset {
                name: format!("{stem}.{:012x}.{ext}", fnv1a(bytes) >> 16),
                content_type,
                bytes,
            })
            .collect()
    })
}

/// The hashed URL of an asset, by its plain name (`app.css`).
pub fn url(plain: &str) -> String {
    let (stem, ext) = plain
        .split_once('.')
        .expect("asset names have an extension");
    let asset = all()
        .iter()
        .find(|a| a.name.starts_with(stem) && a.name.ends_with(ext))
        .expect("a known asset");
    format!("/assets/{}", asset.name)
}

/// `GET /assets/{name}`.
pub async fn serve(UrlPath(name): UrlPath<String>) -> Response {
    let Some(asset) = all().iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}

/// Writes every asset into `dir` (for the gateway to serve from a shared directory, like the
/// seeds' `/_nuxt/` volume). Returns the names written.
pub fn export(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    all()
        .iter()
        .map(|asset| {
            std::fs::write(dir.join(&asset.name), asset.bytes)?;
            Ok(asset.name.clone())
        })
        .collect()
}

/// FNV-1a, 64 bits: stable across builds and platforms, enough to tell versions apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
