//! The server's error type.

/// What can stop the server or drop a client session.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket or file operation failed.
    #[error("{op} failed for {what}")]
    Io {
        /// The operation (`"bind"`, `"accept"`, `"poll"`, ...).
        op: &'static str,
        /// What it was applied to.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The vfio-user connection failed (the session is dropped).
    #[error("vfio-user session error")]
    Protocol(#[from] fdma_vfio_user::Error),
    /// The simulated card could not be built.
    #[error("cannot build the simulated card")]
    Sim(#[from] crate::card::SimError),
}

impl ServerError {
    pub(crate) fn io(
        op: &'static str,
        what: impl std::fmt::Display,
        source: std::io::Error,
    ) -> Self {
        ServerError::Io {
            op,
            what: what.to_string(),
            source,
        }
    }
}
