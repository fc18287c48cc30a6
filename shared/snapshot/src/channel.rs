//! The updater channel: how the snapshot updater (a Lambda, or the local loop) tells the
//! agent on the updater node to quiesce, upload and resume, and how the agent answers.
//!
//! # Why the object store
//!
//! The agent already has the chain-data store (it hydrates from it and uploads to it) and
//! nothing else, in both modes: an S3 bucket on AWS, a folder locally. Keeping the channel
//! there means the updater task needs no table access and no inbound port, the Lambda needs
//! no VPC route to the node, and the local fleet needs no database shared between
//! processes (redb is single-process). Reads and writes of one key are strongly consistent
//! on S3 and atomic in the folder store, which is all the protocol below needs. Retention
//! ([`crate::prune`]) looks only under `packs/`, `manifests/` and `refs/`, so it never
//! touches `control/`.
//!
//! # Two objects per updater node, one writer each
//!
//! | key | written by | what |
//! |---|---|---|
//! | `control/updater/<node>/command` | the updater (holding its lease) | the one current [`Command`]: quiesce, upload or resume, for a round |
//! | `control/updater/<node>/report` | the node's agent | its [`Report`]: heartbeat, health, and the [`Ack`] of the newest command it saw |
//!
//! Each object has a single writer, so plain overwrites are safe and nothing is ever merged.
//! A command's id is `<round>/<action>`: the same command written twice (a tick retried
//! after a lost answer, EventBridge delivering twice) is the same object with the same id,
//! and the agent runs a command id at most once per agent process, so **duplicate delivery
//! is harmless**. A newer command replaces the older one: an upload still running when a
//! resume arrives (the updater aborted the round) is abandoned, and nothing it uploaded is
//! visible (an upload never publishes). A quiesce or upload is not started after its
//! `expires_at_ms` (the updater has given up on it by then); a **resume is always run**,
//! however late: a client must never stay stopped because its resume came late. A quiesce
//! for another round, while the agent is quiesced, fails ("resume first"): the updater then
//! aborts that round, which sends a resume. And an agent whose client is stopped by a round
//! whose quiesce or upload command has expired (or whose channel is gone), with nothing
//! running, resumes on its own: an updater that vanished mid-round must not leave the node
//! stopped for good.
//!
//! # Agent restarts
//!
//! The report names the agent process ([`Report::agent`], new on every start). An agent that
//! starts and finds the current command acknowledged `running` by another process knows
//! that process died mid-command: it acknowledges it `failed` ("the agent restarted while
//! running it"), and the updater aborts the round and resumes the client. A command already
//! acknowledged `done` or `failed` is not run again. A quiesce that was done by a previous
//! process does not carry over: an upload needs a quiesce by *this* process (the updater
//! sees "not quiesced" and aborts), because a restarted agent cannot know what happened to
//! the data dir in between.

use bytes::Bytes;
use nodefleet_ports::{ObjectError, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::create::CreateSummary;
use crate::error::SnapshotError;
use crate::format::ChainPoint;

/// Where the channel's objects live.
pub const CHANNEL_PREFIX: &str = "control/updater/";

/// The key of `node`'s current command.
pub fn command_key(node: &str) -> String {
    format!("{CHANNEL_PREFIX}{node}/command")
}

/// The key of `node`'s agent report.
pub fn report_key(node: &str) -> String {
    format!("{CHANNEL_PREFIX}{node}/report")
}

/// What the updater asks the agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    /// Check the node is healthy, read its chain point, stop the client cleanly.
    Quiesce,
    /// Snapshot the stopped data dir into the store (upload and verify, never publish).
    Upload,
    /// Start the client again (a no-op when it runs).
    Resume,
}

impl CommandAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandAction::Quiesce => "quiesce",
            CommandAction::Upload => "upload",
            CommandAction::Resume => "resume",
        }
    }
}

/// One command for the agent. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// `<round>/<action>`: the same for every delivery of the same command.
    pub id: String,
    pub round: String,
    pub action: CommandAction,
    pub issued_at_ms: u64,
    /// The agent does not start the command after this.
    pub expires_at_ms: u64,
}

impl Command {
    pub fn new(round: &str, action: CommandAction, issued_at_ms: u64, ttl_ms: u64) -> Command {
        Command {
            id: format!("{round}/{}", action.as_str()),
            round: round.to_owned(),
            action,
            issued_at_ms,
            expires_at_ms: issued_at_ms.saturating_add(ttl_ms),
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }
}

/// Where an acknowledged command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckState {
    Running,
    Done,
    Failed,
}

/// What an upload made (from the engine's `CreateSummary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResult {
    pub snapshot: String,
    pub files: u64,
    pub chunks: u64,
    pub chunks_new: u64,
    /// Raw bytes of the data dir.
    pub bytes_total: u64,
    /// Bytes written to the store (new packs and the manifest).
    pub bytes_uploaded: u64,
    /// Raw bytes the store already had.
    pub bytes_skipped: u64,
}

impl From<&CreateSummary> for UploadResult {
    fn from(summary: &CreateSummary) -> Self {
        UploadResult {
            snapshot: summary.snapshot.clone(),
            files: summary.files,
            chunks: summary.chunks,
            chunks_new: summary.chunks_new,
            bytes_total: summary.bytes_total,
            bytes_uploaded: summary.bytes_transferred,
            bytes_skipped: summary.bytes_skipped,
        }
    }
}

/// The agent's answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The command's id.
    pub command: String,
    pub state: AckState,
    /// Why it failed (or what it is doing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A failure that may not happen again (store throttled, node briefly unhealthy).
    #[serde(default)]
    pub retryable: bool,
    pub started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// A done quiesce: the chain point the client stopped at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainPoint>,
    /// A done upload: what it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadResult>,
}

/// The node's health as the agent judged it at the heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReportedHealth {
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_age_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the agent's client is doing, for the updater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentPhase {
    Hydrating,
    Running,
    /// Stopped by a quiesce (and possibly uploading).
    Quiesced,
    Stopping,
}

/// The agent's side of the channel. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node: String,
    /// This agent process: new on every start.
    pub agent: String,
    pub agent_started_at_ms: u64,
    pub heartbeat_at_ms: u64,
    pub phase: AgentPhase,
    pub health: ReportedHealth,
    /// The snapshot the data dir was hydrated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrated_from: Option<String>,
    /// The answer to the newest command this agent saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
}

impl Report {
    /// The ack of `command`, if this report carries it.
    pub fn ack_of(&self, command: &str) -> Option<&Ack> {
        self.ack.as_ref().filter(|a| a.command == command)
    }
}

/// Writes `node`'s current command (replacing the previous one).
pub async fn issue(
    store: &dyn ObjectStore,
    node: &str,
    command: &Command,
) -> Result<(), SnapshotError> {
    put_json(store, &command_key(node), command).await
}

/// `node`'s current command, if there is one.
pub async fn read_command(
    store: &dyn ObjectStore,
    node: &str,
) -> Result<Option<Command>, SnapshotError> {
    get_json(store, &command_key(node)).await
}

/// Writes the agent's report (replacing the previous one).
pub async fn write_report(store: &dyn ObjectStore, report: &Report) -> Result<(), SnapshotError> {
    put_json(store, &report_key(&report.node), report).await
}

/// `node`'s agent report, if its agent ever wrote one.
pub async fn read_report(
    store: &dyn ObjectStore,
    node: &str,
) -> Result<Option<Report>, SnapshotError> {
    get_json(store, &report_key(node)).await
}

/// Removes `node`'s channel (its command and report), once the node is gone for good.
pub async fn remove(store: &dyn ObjectStore, node: &str) -> Result<(), SnapshotError> {
    store.delete(&command_key(node)).await?;
    store.delete(&report_key(node)).await?;
    Ok(())
}

async fn put_json<T: Serialize>(
    store: &dyn ObjectStore,
    key: &str,
    value: &T,
) -> Result<(), SnapshotError> {
    let body = serde_json::to_vec(value).map_err(|e| SnapshotError::BadManifest {
        snapshot: key.to_owned(),
        reason: format!("cannot encode: {e}"),
    })?;
    store.put(key, Bytes::from(body)).await?;
    Ok(())
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<T>, SnapshotError> {
    match store.get(key, None).await {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SnapshotError::BadManifest {
                    snapshot: key.to_owned(),
                    reason: format!("unreadable: {e}"),
                })
        }
        Err(ObjectError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodefleet_ports::fakes::MemoryObjectStore;

    #[tokio::test]
    async fn commands_and_reports_round_trip_and_replace() {
        let store = MemoryObjectStore::default();
        assert_eq!(read_command(&store, "updater-1").await.ok().flatten(), None);
        let quiesce = Command::new("r-1", CommandAction::Quiesce, 1_000, 60_000);
        assert_eq!(quiesce.id, "r-1/quiesce");
        assert!(issue(&store, "updater-1", &quiesce).await.is_ok());
        // A duplicate delivery writes the same thing.
        assert!(issue(&store, "updater-1", &quiesce).await.is_ok());
        assert_eq!(
            read_command(&store, "updater-1").await.ok().flatten(),
            Some(quiesce.clone())
        );
        let resume = Command::new("r-1", CommandAction::Resume, 2_000, 60_000);
        assert!(issue(&store, "updater-1", &resume).await.is_ok());
        assert_eq!(
            read_command(&store, "updater-1").await.ok().flatten(),
            Some(resume)
        );
        assert!(quiesce.is_expired(61_000));
        assert!(!quiesce.is_expired(60_999));

        let report = Report {
            node: "updater-1".into(),
            agent: "a-1".into(),
            agent_started_at_ms: 1,
            heartbeat_at_ms: 2,
            phase: AgentPhase::Running,
            health: ReportedHealth {
                healthy: true,
                block: Some(7),
                head_age_secs: Some(1),
                reason: None,
            },
            hydrated_from: None,
            ack: Some(Ack {
                command: quiesce.id.clone(),
                state: AckState::Running,
                detail: None,
                retryable: false,
                started_at_ms: 2,
                finished_at_ms: None,
                chain: None,
                upload: None,
            }),
        };
        assert!(write_report(&store, &report).await.is_ok());
        let read = read_report(&store, "updater-1").await.ok().flatten();
        assert_eq!(read.as_ref(), Some(&report));
        assert!(
            read.as_ref()
                .and_then(|r| r.ack_of("r-1/quiesce"))
                .is_some()
        );
        assert!(read.as_ref().and_then(|r| r.ack_of("r-1/upload")).is_none());
        assert!(remove(&store, "updater-1").await.is_ok());
        assert_eq!(read_report(&store, "updater-1").await.ok().flatten(), None);
    }

    #[tokio::test]
    async fn an_unreadable_object_is_an_error_not_absence() {
        let store = MemoryObjectStore::default();
        let put = store
            .put(&command_key("n"), Bytes::from_static(b"{not json"))
            .await;
        assert!(put.is_ok());
        assert!(read_command(&store, "n").await.is_err());
    }
}
