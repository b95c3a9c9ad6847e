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
    pub fn from_line(l: &voipwall_logfmt::LogLine<'_>) -> Self {
        use voipwall_detect::EventKind as K;
        use voipwall_logfmt::EventType as T;
        let (kind, user, ua, expires) = match l.event.kind {
            K::AuthFailed { user } => (T::AuthFailed, user, None, None),
            K::AuthSucceeded { user } => (T::AuthOk, user, None, None),
            K::UnknownUser { user } => (T::UnknownUser, user, None, None),
            K::ChallengeSent { user } => (T::Challenge, user, None, None),
            K::Registered { user, expires } => (T::Registered, user, None, expires),
            K::CallRejected { user } => (T::CallRejected, user, None, None),
            K::Agent { agent } => (T::Agent, None, Some(agent), None),
            K::Malformed => (T::Malformed, None, None, None),
            _ => (T::Flooding, None, None, None),
        };
        Self {
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
        }
    }

    pub fn event<'a>(&'a self, origin: &'a str) -> Event<'a> {
        use voipwall_detect::EventKind as K;
        use voipwall_logfmt::EventType as T;
        let user = (self.user.len > 0).then(|| self.user.get());
        let kind = match self.kind {
            T::AuthFailed => K::AuthFailed { user },
            T::AuthOk => K::AuthSucceeded { user },
            T::UnknownUser => K::UnknownUser { user },
            T::Challenge => K::ChallengeSent { user },
            T::Registered => K::Registered {
                user,
                expires: self.expires,
            },
            T::CallRejected => K::CallRejected { user },
            T::Agent => K::Agent {
                agent: self.ua.get(),
            },
            T::Flooding => K::Flooding,
            T::Malformed => K::Malformed,
        };
        Event {
            src: self.src,
            kind,
            origin,
        }
    }
}
