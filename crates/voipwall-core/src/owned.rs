//! Log events with owned fields: parsed on one thread, judged on another.

use std::net::IpAddr;
use std::ops::Range;
use voipwall_detect::{Event, Timestamp};

/// Longest user kept of a line (longer ones are cut: the engine keys
/// accounts by them, and a line must not make it hold kilobytes).
const USER_MAX: usize = 48;
/// Longest user agent kept.
const UA_MAX: usize = 96;

/// Matched lines, owned, so that parsing can run on other threads than the
/// engine: one compact record per line and one buffer for their users and
/// user agents (no allocation per line).
#[derive(Default)]
pub struct Parsed {
    hits: Vec<Hit>,
    text: Vec<u8>,
}

struct Hit {
    at: Option<Timestamp>,
    src: IpAddr,
    kind: voipwall_logfmt::EventType,
    expires: Option<u32>,
    /// In `text`; empty: none.
    user: Range<u32>,
    ua: Range<u32>,
}

impl Parsed {
    /// Adds a log line's event; a kind no log line makes (the log formats
    /// never produce one) is left out.
    pub fn push(&mut self, l: &voipwall_logfmt::LogLine<'_>) {
        let Some(e) = voipwall_logfmt::LogEvent::of(&l.event.kind) else {
            return;
        };
        let mut keep = |v: &[u8], max: usize| {
            let v = &v[..v.len().min(max)];
            // Lines are at most MAX_LINE bytes; a buffer past 4 GiB (a
            // batch no caller builds) keeps no text rather than wrap.
            let start = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
            let end = start.saturating_add(v.len() as u32);
            if end < u32::MAX {
                self.text.extend_from_slice(v);
                start..end
            } else {
                0..0
            }
        };
        let user = keep(e.user.unwrap_or_default(), USER_MAX);
        let ua = keep(e.agent, UA_MAX);
        self.hits.push(Hit {
            at: l.at,
            src: l.event.src,
            kind: e.kind,
            expires: e.expires,
            user,
            ua,
        });
    }

    /// Empties it, keeping its memory for the next batch.
    pub fn clear(&mut self) {
        self.hits.clear();
        self.text.clear();
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Each event with its line's time, in the order pushed; `origin` names
    /// the source (`asterisk`, `log`).
    pub fn iter<'a>(
        &'a self,
        origin: &'a str,
    ) -> impl Iterator<Item = (Option<Timestamp>, Event<'a>)> + 'a {
        let text = |r: &Range<u32>| {
            self.text
                .get(r.start as usize..r.end as usize)
                .unwrap_or_default()
        };
        self.hits.iter().map(move |h| {
            let user = text(&h.user);
            let kind = voipwall_logfmt::LogEvent {
                kind: h.kind,
                user: (!user.is_empty()).then_some(user),
                agent: text(&h.ua),
                expires: h.expires,
            }
            .kind();
            let ev = Event {
                src: h.src,
                kind,
                origin,
            };
            (h.at, ev)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voipwall_logfmt::Format;
    use voipwall_logfmt::prefix::Context;

    #[test]
    fn events_come_back_as_parsed_with_long_fields_cut() {
        let f = Format::combine("all", Format::all_builtin());
        let long = "9".repeat(200);
        let lines = [
            "[2026-11-23 10:22:29] NOTICE[1] chan_sip.c: Registration from '\"1001\" <sip:1001@pbx>' failed for '203.0.113.9:5060' - Wrong password".to_string(),
            format!("[2026-11-23 10:22:30] NOTICE[1] chan_sip.c: Registration from '<sip:{long}@pbx>' failed for '203.0.113.10:5060' - Wrong password"),
            "[2026-11-23 10:22:31] NOTICE[1] chan_sip.c: Registration from '\"7\" <sip:7@pbx>' failed for '203.0.113.11:5060' - Wrong password".to_string(),
        ];
        let mut p = Parsed::default();
        for l in &lines {
            p.push(&f.parse_line(l.as_bytes(), &Context::default()).unwrap());
        }
        assert_eq!(p.len(), 3);
        let got: Vec<_> = p
            .iter("log")
            .map(|(at, e)| {
                let (what, user, _) = voipwall_logfmt::describe(&e.kind);
                (
                    at.unwrap().to_string(),
                    e.src.to_string(),
                    what,
                    user,
                    e.origin,
                )
            })
            .collect();
        let user = |u: &str| Some(u.to_string());
        assert_eq!(
            got,
            [
                (
                    "2026-11-23T10:22:29.000Z".into(),
                    "203.0.113.9".into(),
                    "auth-failed",
                    user("1001"),
                    "log"
                ),
                (
                    "2026-11-23T10:22:30.000Z".into(),
                    "203.0.113.10".into(),
                    "auth-failed",
                    user(&long[..USER_MAX]),
                    "log"
                ),
                (
                    "2026-11-23T10:22:31.000Z".into(),
                    "203.0.113.11".into(),
                    "auth-failed",
                    user("7"),
                    "log"
                ),
            ]
        );
    }
}
