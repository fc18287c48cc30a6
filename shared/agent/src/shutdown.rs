//! The shutdown signal the caller hands to [`crate::run()`].
//!
//! [`Shutdown::new`] gives a [`ShutdownTrigger`] (fire it once) and a [`Shutdown`] (clone it
//! freely; every clone sees the trigger). It is a `tokio::sync::watch` underneath, so a
//! task that starts waiting after the trigger fired still sees it. A trigger dropped
//! without firing counts as fired: nothing could stop the agent any more otherwise.
//! [`Shutdown::on_signals`] fires on the first SIGTERM (ECS stopping the task) or SIGINT
//! (Ctrl-C): that is what `nodefleet agent run` uses.

use tokio::sync::watch;

/// Fires the shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    fired: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// Asks everything that holds the matching [`Shutdown`] to stop.
    pub fn fire(&self) {
        self.fired.send_replace(true);
    }
}

/// Resolves when the shutdown was asked for. See the module doc.
#[derive(Debug, Clone)]
pub struct Shutdown {
    fired: watch::Receiver<bool>,
}

impl Shutdown {
    /// A trigger and the signal it fires.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (fired, receiver) = watch::channel(false);
        (ShutdownTrigger { fired }, Shutdown { fired: receiver })
    }

    /// A signal fired by the first SIGTERM or SIGINT this process gets. Must be called
    /// inside a tokio runtime; fails if the signal handlers cannot be installed.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!("{name} received: stopping");
            trigger.fire();
        });
        Ok(shutdown)
    }

    /// Whether the shutdown was asked for (or its trigger dropped).
    pub fn is_fired(&self) -> bool {
        *self.fired.borrow() || self.fired.has_changed().is_err()
    }

    /// Waits until the shutdown is asked for (or its trigger dropped).
    pub async fn wait(&mut self) {
        let _ = self.fired.wait_for(|fired| *fired).await;
    }
}
