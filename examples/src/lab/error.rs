//! Why the lab could not do something: what it was doing, and the cause.

use std::fmt;

/// A lab operation that failed: what it was doing, and the cause when there is one. `Debug`
/// shows the same sentence, so `expect` in a test prints it whole.
pub struct LabError {
    doing: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl LabError {
    /// A failure described by `message` alone.
    pub fn new(message: impl Into<String>) -> Self {
        Self { doing: message.into(), source: None }
    }
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.doing),
            None => f.write_str(&self.doing),
        }
    }
}

impl fmt::Debug for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LabError({self})")
    }
}

impl std::error::Error for LabError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The lab's results.
pub type LabResult<T> = Result<T, LabError>;

/// Adds what the lab was doing to an error.
pub(crate) trait Context<T> {
    /// Wraps the error with `doing` ("cannot write /x").
    fn context(self, doing: impl FnOnce() -> String) -> LabResult<T>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Context<T> for Result<T, E> {
    fn context(self, doing: impl FnOnce() -> String) -> LabResult<T> {
        self.map_err(|e| LabError { doing: doing(), source: Some(e.into()) })
    }
}
