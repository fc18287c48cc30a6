//! The shutdown signal: a fired trigger reaches every clone, also one that starts waiting
//! later; a dropped trigger counts as fired; and `Shutdown::on_signals` fires on a real
//! SIGTERM sent to this process (its own test binary, so the handler it installs cannot
//! affect other tests).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nodefleet_agent::Shutdown;

#[tokio::test]
async fn a_fired_trigger_reaches_every_clone() {
    let (trigger, shutdown) = Shutdown::new();
    let mut early = shutdown.clone();
    assert!(!shutdown.is_fired());
    let waiting = tokio::spawn(async move { early.wait().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    // A clone that starts waiting after the fact sees it too.
    let mut late = shutdown.clone();
    assert!(late.is_fired());
    tokio::time::timeout(Duration::from_secs(1), late.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dropped_trigger_counts_as_fired() {
    let (trigger, mut shutdown) = Shutdown::new();
    drop(trigger);
    assert!(shutdown.is_fired());
    tokio::time::timeout(Duration::from_secs(1), shutdown.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_fires_the_signal_shutdown() {
    let mut shutdown = Shutdown::on_signals().unwrap();
    assert!(!shutdown.is_fired());
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
        .await
        .unwrap();
    assert!(shutdown.is_fired());
}
