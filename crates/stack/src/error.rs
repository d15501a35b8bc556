//! What can go wrong running the system, worded for the person who ran it.

/// Why `flotilla up`, `ps` or `rollout` failed.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file, directory, port or signal the stack needed, and what it was for.
    #[error("{what}: {source}")]
    IoAt {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The control endpoint of a running `flotilla up`.
    #[error("{what}: {source}")]
    Control {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// Something the stack checked and found wrong.
    #[error("{0}")]
    Failed(String),
    /// A step that failed, and what that means.
    #[error("{what}: {source}")]
    Step {
        what: String,
        #[source]
        source: Box<StackError>,
    },
}

pub type Result<T> = std::result::Result<T, StackError>;

/// Says what an I/O operation was for.
pub(crate) trait Context<T> {
    fn for_what(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn for_what(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StackError::IoAt {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn for_what(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| StackError::IoAt {
            what: what(),
            source: errno.into(),
        })
    }
}

/// `Err(StackError::Failed(..))` with a formatted message.
macro_rules! failed {
    ($($arg:tt)*) => {
        return Err($crate::error::StackError::Failed(format!($($arg)*)))
    };
}
pub(crate) use failed;
