//! Small files kept in memory, per worker thread, and checked against the disk at most once a
//! [`RECHECK`](super::RECHECK).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{CACHE_BYTES, CACHE_FILES, Meta, RECHECK, Siblings};
use bytes::Bytes;

/// A small file kept in memory.
pub(super) struct SmallFile {
    pub(super) meta: Meta,
    pub(super) bytes: Bytes,
}

struct Kept {
    checked: Instant,
    file: Arc<SmallFile>,
}

/// Per worker thread: small files by directory, accepted siblings and request path.
#[derive(Default)]
struct Cache {
    files: HashMap<(u64, Siblings), HashMap<String, Kept>>,
    bytes: usize,
    count: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

/// The file kept for this request, if it was checked against the disk within [`RECHECK`]. When
/// it was not, the caller checks it again and, until it is done, the other requests for it
/// still get the kept copy: one check at a time, however many requests arrive together.
pub(super) fn cached(dir: u64, siblings: Siblings, path: &str) -> Option<Arc<SmallFile>> {
    CACHE.with_borrow_mut(|cache| {
        let kept = cache.files.get_mut(&(dir, siblings))?.get_mut(path)?;
        let now = Instant::now();
        if now.duration_since(kept.checked) < RECHECK {
            Some(Arc::clone(&kept.file))
        } else {
            kept.checked = now;
            None
        }
    })
}

pub(super) fn keep(dir: u64, siblings: Siblings, path: &str, file: Arc<SmallFile>) {
    CACHE.with_borrow_mut(|cache| {
        if cache.bytes + file.bytes.len() > CACHE_BYTES || cache.count >= CACHE_FILES {
            *cache = Cache::default();
        }
        let kept = Kept {
            checked: Instant::now(),
            file,
        };
        cache.bytes += kept.file.bytes.len();
        let previous = cache
            .files
            .entry((dir, siblings))
            .or_default()
            .insert(path.to_string(), kept);
        match previous {
            Some(previous) => cache.bytes -= previous.file.bytes.len(),
            None => cache.count += 1,
        }
    });
}

/// Drops the file kept for this request, if any: it is gone, or no longer small.
pub(super) fn forget(dir: u64, siblings: Siblings, path: &str) {
    CACHE.with_borrow_mut(|cache| {
        let gone = cache
            .files
            .get_mut(&(dir, siblings))
            .and_then(|files| files.remove(path));
        if let Some(gone) = gone {
            cache.bytes -= gone.file.bytes.len();
            cache.count -= 1;
        }
    });
}
