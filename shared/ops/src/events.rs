//! The audit trail as an operator reads it (`nodefleet events`, the recent events of
//! `nodefleet status`): the newest events first, filtered, at most a limit.
//!
//! The `StateStore` port lists events oldest first from a time on (DynamoDB queries its
//! sort key forward), so [`recent_events`] pages forward from `since` to `now` in pages of
//! [`EVENT_PAGE`] and keeps the newest `limit` that match: it reads every event of the
//! window once, which is why the window (`--since`) has a default of a day
//! ([`DEFAULT_EVENTS_SINCE`]) and not the trail's whole 90 days.
//!
//! # Error policy
//!
//! A store error ends the listing ([`StateError`], its own retry policy). A page of
//! [`EVENT_PAGE`] events that all share one millisecond moves the cursor on by a
//! millisecond, so the listing always ends; events past the page in that same millisecond
//! are then skipped (it takes hundreds of events in one millisecond).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use nodefleet_ports::{AuditEvent, StateError, StateStore, Timestamp};

/// Events read per store call: one DynamoDB query page of small items.
pub const EVENT_PAGE: usize = 500;

/// The window `nodefleet events` reads when not told: a day holds a night's incidents and
/// the snapshot rounds since yesterday, and reads in one or two pages on a calm fleet.
pub const DEFAULT_EVENTS_SINCE: Duration = Duration::from_secs(24 * 60 * 60);

/// Events `nodefleet events` prints when not told.
pub const DEFAULT_EVENTS_LIMIT: usize = 50;

/// Which events to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only kinds starting with this (`reactor.`, `reactor.launch`, `snapshot.`).
    pub kind_prefix: Option<String>,
    /// Only this subject (a node id, a snapshot id, `fleet`).
    pub subject: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.admits(&event.kind, &event.subject)
    }

    /// True for an event of this kind and subject (for events read as JSON, not records).
    pub fn admits(&self, kind: &str, subject: &str) -> bool {
        self.kind_prefix
            .as_deref()
            .is_none_or(|prefix| kind.starts_with(prefix))
            && self.subject.as_deref().is_none_or(|s| subject == s)
    }
}

/// The newest `limit` events from `since` to `now` that `filter` keeps, newest first.
pub async fn recent_events(
    state: &dyn StateStore,
    since: Timestamp,
    now: Timestamp,
    limit: usize,
    filter: &EventFilter,
) -> Result<Vec<AuditEvent>, StateError> {
    let mut kept: VecDeque<AuditEvent> = VecDeque::with_capacity(limit.min(EVENT_PAGE));
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut cursor = since;
    // Events at the cursor's millisecond already seen (the next page starts there again).
    let mut seen_at_cursor: HashSet<String> = HashSet::new();
    loop {
        let page = state.list_events(cursor, now, EVENT_PAGE).await?;
        let full = page.len() == EVENT_PAGE;
        let Some(last_at) = page.last().map(|e| e.at) else {
            break;
        };
        let mut seen_at_last = HashSet::new();
        for event in page {
            if event.at == cursor && seen_at_cursor.contains(&event.id) {
                continue;
            }
            if event.at == last_at {
                seen_at_last.insert(event.id.clone());
            }
            if filter.matches(&event) {
                if kept.len() == limit {
                    kept.pop_front();
                }
                kept.push_back(event);
            }
        }
        if !full {
            break;
        }
        if last_at == cursor {
            // A whole page in one millisecond: move on (see the module doc).
            cursor = cursor.plus(Duration::from_millis(1));
            seen_at_cursor.clear();
        } else {
            cursor = last_at;
            seen_at_cursor = seen_at_last;
        }
        if cursor > now {
            break;
        }
    }
    Ok(kept.into_iter().rev().collect())
}

/// Reads an age like `90s`, `15m`, `6h`, `7d` (a whole number and one unit: `s`, `m`, `h`,
/// `d`), for `--since`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || format!("{text:?} is not an age like 90s, 15m, 6h or 7d");
    let number: u64 = number.parse().map_err(|_| expected())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(expected()),
    };
    number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_age(" 6h "), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "h",
            "5",
            "5 h",
            "5w",
            "-5m",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_match_kind_prefixes_and_subjects() {
        let event = AuditEvent::new(
            Timestamp::from_millis(1),
            "reactor.launch",
            "node-1",
            "",
            Duration::from_secs(60),
        );
        assert!(EventFilter::default().matches(&event));
        let kind = |k: &str| EventFilter {
            kind_prefix: Some(k.to_owned()),
            subject: None,
        };
        assert!(kind("reactor.").matches(&event));
        assert!(!kind("snapshot.").matches(&event));
        let subject = |s: &str| EventFilter {
            kind_prefix: None,
            subject: Some(s.to_owned()),
        };
        assert!(subject("node-1").matches(&event));
        assert!(!subject("node-10").matches(&event));
    }
}
