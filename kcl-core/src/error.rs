//! What the typed errors of every domain share: the backend's own error, kept as their source
//! ([`Cause`]), and a way to print an error with its sources ([`Report`]).

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The error a backend reported (an SDK error, an I/O error), kept as the source of a typed
/// error such as [`LeaseError`](crate::lease::LeaseError) so that nothing it said is lost.
///
/// Shared, so the typed errors stay `Clone`; two causes are equal when they display the same,
/// so typed errors compare by what they say.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `error`.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// The error as reported.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

/// Displays an error followed by each of its sources, `: `-separated — what a log line needs
/// (an error's own `Display` says only its level of the story).
///
/// ```
/// use kcl_core::error::Report;
/// let io = std::io::Error::other("connection reset");
/// let e = kcl_core::lease::LeaseError::unavailable("GetItem shardId-000000000001").with_source(io);
/// assert_eq!(
///     Report(&e).to_string(),
///     "lease store unavailable: GetItem shardId-000000000001: connection reset"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
