//! `nodefleet events [--stack NAME | --dir .nodefleet] [--since 24h] [--limit 50] [--kind PREFIX] [--subject ID]
//! [--json]`: the control plane's audit trail (what the reactor and the updater did, and
//! why), newest first, through `nodefleet_ops::events` for a stack and the console's
//! `/api/events` for the local fleet. `--json` prints
//! `{"events":[{"at", "kind", "subject", "detail"}]}`, the local console's shape.

use std::time::Duration;

use clap::Args;
use nodefleet_ops::events::{DEFAULT_EVENTS_LIMIT, EventFilter, parse_age, recent_events};
use nodefleet_ops::report::{EventRow, render_events};
use nodefleet_ports::Timestamp;
use serde::Serialize;

use http::Method;
use nodefleet_local::console::MAX_EVENTS;
use nodefleet_local::status::EventStatus;

use crate::stack::{Fleet, FleetArg};

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    fleet: FleetArg,
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
    let now = Timestamp::now();
    let filter = EventFilter {
        kind_prefix: args.kind,
        subject: args.subject,
    };
    let events: Vec<EventRow> = match args.fleet.fleet() {
        Fleet::Stack(stack) => {
            let adapters = crate::stack::open(&stack).await?;
            recent_events(
                &adapters.state,
                now.minus(args.since),
                now,
                args.limit,
                &filter,
            )
            .await?
            .iter()
            .map(EventRow::from)
            .collect()
        }
        Fleet::Local(dir) => {
            let answer = crate::local_fleet::call(
                &dir,
                Method::GET,
                &format!("/api/events?limit={MAX_EVENTS}"),
            )
            .await?;
            let events: Vec<EventStatus> = serde_json::from_value(answer["events"].clone())
                .map_err(|e| {
                    anyhow::anyhow!("the console's events are not a list of events: {e}")
                })?;
            let since = now.minus(args.since);
            events
                .into_iter()
                .filter(|e| e.at >= since)
                .filter(|e| filter.admits(&e.kind, &e.subject))
                .take(args.limit)
                .map(|e| EventRow {
                    at: e.at,
                    kind: e.kind,
                    subject: e.subject,
                    detail: e.detail,
                })
                .collect()
        }
    };
    if args.json {
        return crate::stack::print_json(&EventsAnswer { events });
    }
    if events.is_empty() {
        return crate::stack::print(&format!("no events in the last {} s", args.since.as_secs()));
    }
    crate::stack::print(&render_events(&events, now, ""))
}
