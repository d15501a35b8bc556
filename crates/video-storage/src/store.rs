//! Where the objects live: a local directory (the default), an Azure Blob container (the
//! seed's backend) or an S3 bucket, all through `object_store`, plus the one check only the
//! local directory needs: that a path does not lead out of it through a symbolic link.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, RetryConfig};

/// Which backend, parsed from `VIDEO_STORE` (and the seed's Azure variables).
#[derive(Clone, PartialEq)]
pub enum Backend {
    /// A directory, created when missing.
    Local(PathBuf),
    /// An Azure Blob container.
    Azure {
        container: String,
        account: String,
        access_key: Option<String>,
        /// Another endpoint than `https://<account>.blob.core.windows.net` (Azurite's
        /// `http://127.0.0.1:10000/devstoreaccount1`).
        endpoint: Option<String>,
    },
    /// An S3 bucket (AWS or a compatible server).
    S3 {
        bucket: String,
        /// The standard AWS settings given (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
        options: Vec<(AmazonS3ConfigKey, String)>,
        endpoint: Option<String>,
    },
}

impl std::fmt::Debug for Backend {
    // Never the access key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Local(dir) => write!(f, "local directory {}", dir.display()),
            Backend::Azure {
                container,
                account,
                endpoint,
                ..
            } => write!(
                f,
                "Azure Blob container {container} of account {account}{}",
                endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            Backend::S3 {
                bucket, endpoint, ..
            } => write!(
                f,
                "S3 bucket {bucket}{}",
                endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the video directory {0}: {1}")]
    Directory(PathBuf, std::io::Error),
    #[error("cannot open the {0:?}: {1}")]
    Store(Box<Backend>, Box<object_store::Error>),
}

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) objects: Arc<dyn ObjectStore>,
    /// The local directory's store and its real (canonical) root, for the symlink check.
    local: Option<(Arc<LocalFileSystem>, PathBuf)>,
}

/// A path that resolves outside the store's directory.
#[derive(Debug, thiserror::Error)]
#[error("path leads outside the store")]
pub struct Outside;

impl Store {
    pub fn open(backend: &Backend) -> Result<Store, OpenError> {
        match backend {
            Backend::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| OpenError::Directory(dir.clone(), e))?;
                let root =
                    std::fs::canonicalize(dir).map_err(|e| OpenError::Directory(dir.clone(), e))?;
                // fsync: an upload that answered 201 survives a power cut, as with a cloud store.
                let local = Arc::new(
                    LocalFileSystem::new_with_prefix(&root)
                        .map_err(|e| OpenError::Store(Box::new(backend.clone()), Box::new(e)))?
                        .with_fsync(true),
                );
                Ok(Store {
                    objects: local.clone(),
                    local: Some((local, root)),
                })
            }
            Backend::Azure {
                container,
                account,
                access_key,
                endpoint,
            } => {
                let mut builder = MicrosoftAzureBuilder::new()
                    .with_http_connector(crate::connector::PlainHttp)
                    .with_retry(retries())
                    .with_account(account)
                    .with_container_name(container);
                if let Some(key) = access_key {
                    builder = builder.with_access_key(key);
                }
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint.clone())
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let store = builder
                    .build()
                    .map_err(|e| OpenError::Store(Box::new(backend.clone()), Box::new(e)))?;
                Ok(Store {
                    objects: Arc::new(store),
                    local: None,
                })
            }
            Backend::S3 {
                bucket,
                options,
                endpoint,
            } => {
                let mut builder = AmazonS3Builder::new()
                    .with_http_connector(crate::connector::PlainHttp)
                    .with_retry(retries())
                    .with_bucket_name(bucket);
                for (key, value) in options {
                    builder = builder.with_config(*key, value);
                }
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let store = builder
                    .build()
                    .map_err(|e| OpenError::Store(Box::new(backend.clone()), Box::new(e)))?;
                Ok(Store {
                    objects: Arc::new(store),
                    local: None,
                })
            }
        }
    }

    /// Refuses a path of the local directory that resolves, through symbolic links, to a place
    /// outside it (for a path that does not exist yet: its nearest existing ancestor). Other
    /// backends have no links.
    pub async fn check_inside(&self, path: &Path) -> Result<(), Outside> {
        let Some((local, root)) = &self.local else {
            return Ok(());
        };
        let Ok(file) = local.path_to_filesystem(path) else {
            return Err(Outside);
        };
        let root = root.clone();
        tokio::task::spawn_blocking(move || resolves_inside(&file, &root))
            .await
            .unwrap_or(Err(Outside))
    }
}

fn resolves_inside(file: &FsPath, root: &FsPath) -> Result<(), Outside> {
    let mut probe = Some(file);
    while let Some(candidate) = probe {
        match std::fs::canonicalize(candidate) {
            Ok(real) if real.starts_with(root) => return Ok(()),
            Ok(_) => return Err(Outside),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => probe = candidate.parent(),
            Err(_) => return Err(Outside),
        }
    }
    Err(Outside)
}

/// Two retries within 10 s, rather than `object_store`'s ten within three minutes: a request
/// whose store is down should hear so quickly (503), not hang.
fn retries() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    }
}
