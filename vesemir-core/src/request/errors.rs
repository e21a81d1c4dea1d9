//! Validation errors: every problem of a request, each with the field path and what to do.

use std::fmt;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Where, e.g. `load_balancer.ramp[1].weight`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a request, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// A single problem.
    pub fn one(error: FieldError) -> Self {
        Self(vec![error])
    }

    /// The problems of `errors`, or `None` when there are none.
    pub fn from_errors(errors: Vec<FieldError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self(errors))
    }

    /// The problems, in the order found (at least one).
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// Prefixes every field path with `prefix` (e.g. `playbooks.web`).
    pub fn within(mut self, prefix: &str) -> Self {
        for error in &mut self.0 {
            error.field = if error.field == "(document)" {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", error.field)
            };
        }
        self
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems:", many.len())?;
                for error in many {
                    write!(f, "\n  - {error}")?;
                }
                Ok(())
            }
        }
    }
}

/// Collects problems while validating.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<FieldError>);

impl Problems {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Keeps the value, or records the error's text against `field`.
    pub(crate) fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    pub(crate) fn extend(&mut self, errors: ValidationErrors) {
        self.0.extend(errors.0);
    }

    pub(crate) fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            // Every field was checked: `value` only fails if a check above recorded a problem.
            value().ok_or_else(|| ValidationErrors::one(FieldError::new("(document)", "is incomplete")))
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}
