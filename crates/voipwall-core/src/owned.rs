//! A log event with owned fields: parsed on one thread, judged on another.

use std::net::IpAddr;
use voipwall_detect::{Event, Timestamp};

/// A matched line, owned, so that parsing can run on other threads than
/// the engine. User and user agent are kept inline (truncated).
pub struct Parsed {
    pub at: Option<Timestamp>,
    src: IpAddr,
    kind: voipwall_logfmt::EventType,
    user: Inline<48>,
    ua: Inline<96>,
    expires: Option<u32>,
}

struct Inline<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> Inline<N> {
    fn new(v: Option<&[u8]>) -> Option<Self> {
        let v = v?;
        let n = v.len().min(N).min(255);
        let mut buf = [0; N];
        buf[..n].copy_from_slice(&v[..n]);
        Some(Self {
            len: u8::try_from(n).expect("at most 255"),
            buf,
        })
    }

    fn get(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl Parsed {
    /// The owned form of a log line's event; `None` for a kind no log
    /// line makes (the log formats never produce one).
    pub fn from_line(l: &voipwall_logfmt::LogLine<'_>) -> Option<Self> {
        let e = voipwall_logfmt::LogEvent::of(&l.event.kind)?;
        let (kind, user, ua, expires) = (
            e.kind,
            e.user,
            Some(e.agent).filter(|a| !a.is_empty()),
            e.expires,
        );
        Some(Self {
            at: l.at,
            src: l.event.src,
            kind,
            user: Inline::new(user).unwrap_or(Inline {
                len: 0,
                buf: [0; 48],
            }),
            ua: Inline::new(ua).unwrap_or(Inline {
                len: 0,
                buf: [0; 96],
            }),
            expires,
        })
    }

    pub fn event<'a>(&'a self, origin: &'a str) -> Event<'a> {
        let kind = voipwall_logfmt::LogEvent {
            kind: self.kind,
            user: (self.user.len > 0).then(|| self.user.get()),
            agent: self.ua.get(),
            expires: self.expires,
        }
        .kind();
        Event {
            src: self.src,
            kind,
            origin,
        }
    }
}
