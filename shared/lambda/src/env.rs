//! Reading a Lambda's settings from its environment: required and optional variables, parsed
//! with an error that names the variable, what it holds and what was expected, so a bad
//! deployment fails at init with one line an operator can act on.

use std::str::FromStr;

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}={value:?}: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: String,
    },
}

/// The environment, as a lookup (in production `|name| std::env::var(name).ok()`).
#[derive(Clone, Copy)]
pub struct Env<'a> {
    var: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

impl<'a> Env<'a> {
    pub fn new(var: &'a dyn Fn(&str) -> Option<String>) -> Env<'a> {
        Env { var }
    }

    /// The variable, if set to something other than blanks.
    pub fn optional(&self, name: &'static str) -> Option<String> {
        (self.var)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, EnvError> {
        self.optional(name).ok_or(EnvError::Missing(name))
    }

    /// The variable parsed, `default` when unset.
    pub fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, EnvError> {
        match self.optional(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| EnvError::Invalid {
                name,
                value,
                expected: expected.to_owned(),
            }),
        }
    }

    /// A comma-separated list (blanks around items ignored, empty items dropped).
    pub fn list(&self, name: &'static str) -> Vec<String> {
        self.optional(name)
            .map(|v| {
                v.split(',')
                    .map(|item| item.trim().to_owned())
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An error for `name` holding `value`.
    pub fn invalid(name: &'static str, value: &str, expected: &str) -> EnvError {
        EnvError::Invalid {
            name,
            value: value.to_owned(),
            expected: expected.to_owned(),
        }
    }
}
