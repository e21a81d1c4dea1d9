//! SIGHUP: `vesemir serve` keeps running and reads again what its [`Reload`] actions own (the
//! TLS certificate and key today). The actions are a list, [`Reloads`]: adding one is one
//! `.with(...)` where the server is started. Each action is tried on its own: one that fails
//! keeps what it had and is logged, the others still reload.
//!
//! [`Hangups::register`] is called first thing at start, so that SIGHUP never ends the process
//! (its default action) while the server is opening.

use std::sync::Arc;

/// Why an action could not reload; what it had stays in use.
pub type ReloadError = Box<dyn std::error::Error + Send + Sync>;

/// Something the server reads again on SIGHUP.
pub trait Reload: Send + Sync {
    /// What it reloads, for the log: "the TLS certificate and key".
    fn what(&self) -> &str;

    /// Reads its files again. On an error it must keep what it had loaded before.
    fn reload(&self) -> Result<(), ReloadError>;
}

/// A [`Reload`] from a name and a function.
struct FnReload<F> {
    what: String,
    reload: F,
}

impl<F> Reload for FnReload<F>
where
    F: Fn() -> Result<(), ReloadError> + Send + Sync,
{
    fn what(&self) -> &str {
        &self.what
    }

    fn reload(&self) -> Result<(), ReloadError> {
        (self.reload)()
    }
}

/// The server's reload actions, run in order on each SIGHUP.
#[derive(Clone, Default)]
pub struct Reloads {
    actions: Vec<Arc<dyn Reload>>,
}

impl std::fmt::Debug for Reloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.actions.iter().map(|a| a.what().to_owned())).finish()
    }
}

/// How one action's reload went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// The action's [`Reload::what`].
    pub what: String,
    /// `Err` with the reason when it kept what it had.
    pub result: Result<(), String>,
}

impl Reloads {
    /// These actions and `action`.
    #[must_use]
    pub fn with(mut self, action: Arc<dyn Reload>) -> Self {
        self.actions.push(action);
        self
    }

    /// These actions and one that calls `reload`, logged as `what`.
    #[must_use]
    pub fn with_fn(
        self,
        what: impl Into<String>,
        reload: impl Fn() -> Result<(), ReloadError> + Send + Sync + 'static,
    ) -> Self {
        self.with(Arc::new(FnReload { what: what.into(), reload }))
    }

    /// How many actions there are.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Runs every action, each whatever the others did, and logs each outcome.
    pub fn run(&self) -> Vec<ReloadOutcome> {
        self.actions
            .iter()
            .map(|action| {
                let what = action.what().to_owned();
                let result = action.reload().map_err(|e| e.to_string());
                match &result {
                    Ok(()) => tracing::info!(what = %what, "reloaded"),
                    Err(error) => {
                        tracing::error!(what = %what, error = %error, "not reloaded: keeping what was loaded before")
                    }
                }
                ReloadOutcome { what, result }
            })
            .collect()
    }
}

/// SIGHUP, caught: from [`register`](Self::register) on it no longer ends the process.
#[derive(Debug)]
pub struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    /// Catches SIGHUP from now on (signals that arrive before [`spawn`](Self::spawn) are
    /// handled once it runs).
    pub fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            Ok(Self { signal })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Runs `reloads` on every SIGHUP (off the async workers: they read files), until the
    /// task is dropped.
    pub fn spawn(self, reloads: Reloads) -> tokio::task::JoinHandle<()> {
        #[cfg(unix)]
        {
            let mut signal = self.signal;
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    tracing::info!(actions = reloads.len(), "SIGHUP: reloading");
                    let reloads = reloads.clone();
                    let _ = tokio::task::spawn_blocking(move || reloads.run()).await;
                }
            })
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            let _ = reloads;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_action_runs_even_after_one_that_fails_and_each_outcome_is_told() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let reloads = Reloads::default()
            .with_fn("a broken file", || Err("cannot read /etc/x: denied".into()))
            .with_fn("a good file", move || {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        assert_eq!(format!("{reloads:?}"), r#"["a broken file", "a good file"]"#);
        let outcomes = reloads.run();
        assert_eq!(
            outcomes,
            [
                ReloadOutcome {
                    what: "a broken file".into(),
                    result: Err("cannot read /etc/x: denied".into())
                },
                ReloadOutcome { what: "a good file".into(), result: Ok(()) },
            ]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
