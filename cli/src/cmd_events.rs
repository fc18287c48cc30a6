//! `nodefleet events --stack NAME [--since 24h] [--limit 50] [--kind PREFIX] [--subject ID]
//! [--json]`: the control plane's audit trail (what the reactor and the updater did, and
//! why), newest first, through `nodefleet_ops::events`. `--json` prints
//! `{"events":[{"at", "kind", "subject", "detail"}]}`, the local console's shape.

use std::time::Duration;

use clap::Args;
use nodefleet_ops::events::{DEFAULT_EVENTS_LIMIT, EventFilter, parse_age, recent_events};
use nodefleet_ops::report::{EventRow, render_events};
use nodefleet_ports::Timestamp;
use serde::Serialize;

use crate::stack::StackArg;

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    stack: StackArg,
    /// How far back to look: 90s, 15m, 6h, 7d (events are kept 90 days).
    #[arg(long, default_value = "24h", value_parser = parse_age)]
    since: Duration,
    /// At most this many events (the newest).
    #[arg(long, default_value_t = DEFAULT_EVENTS_LIMIT)]
    limit: usize,
    /// Only events whose kind starts with this (`reactor.`, `reactor.launch`).
    #[arg(long, value_name = "PREFIX")]
    kind: Option<String>,
    /// Only events about this subject (a node id, a snapshot id, `fleet`).
    #[arg(long, value_name = "ID")]
    subject: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EventsAnswer {
    events: Vec<EventRow>,
}

pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let adapters = crate::stack::open(&args.stack.stack).await?;
    let now = Timestamp::now();
    let filter = EventFilter {
        kind_prefix: args.kind,
        subject: args.subject,
    };
    let events = recent_events(
        &adapters.state,
        now.minus(args.since),
        now,
        args.limit,
        &filter,
    )
    .await?;
    let events: Vec<EventRow> = events.iter().map(EventRow::from).collect();
    if args.json {
        return crate::stack::print_json(&EventsAnswer { events });
    }
    if events.is_empty() {
        return crate::stack::print(&format!("no events in the last {} s", args.since.as_secs()));
    }
    crate::stack::print(&render_events(&events, now, ""))
}
