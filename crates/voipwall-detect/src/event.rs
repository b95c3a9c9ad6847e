//! What the engine is fed: SIP requests the host received, SIP responses it
//! sent (both from packet copies), and the verdicts a PBX wrote to its logs.
//!
//! Events borrow from the packet or log line; the engine copies only what it
//! keeps. The client address is always the packet's (source of a request,
//! destination of a response) or the field the server wrote in its log line,
//! never a header value an attacker chose.

use std::net::IpAddr;

use voipwall_sip::{Message, StartLine};

/// One observation about a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The client (remote) address.
    pub src: IpAddr,
    /// What was observed.
    pub kind: EventKind<'a>,
    /// Where it came from, for evidence (`nflog`, `asterisk-security`, ...).
    pub origin: &'a str,
}

/// The kinds of observation. Not `non_exhaustive`: the workspace's
/// conversions (`voipwall_logfmt::LogEvent`) match it exhaustively, so a
/// new kind is a compile error there instead of a misreported event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind<'a> {
    /// A SIP request the host received from the client.
    Request(Request<'a>),
    /// A SIP response the host sent to the client.
    Response(Response<'a>),
    /// The server rejected the client's credentials (log line).
    AuthFailed {
        /// The user (extension, account) the client tried.
        user: Option<&'a [u8]>,
    },
    /// The server accepted the client's credentials (log line).
    AuthSucceeded {
        /// The user.
        user: Option<&'a [u8]>,
    },
    /// The client asked for a user the server does not have (log line).
    UnknownUser {
        /// The user.
        user: Option<&'a [u8]>,
    },
    /// The server sent the client a digest challenge (log line).
    ChallengeSent {
        /// The user.
        user: Option<&'a [u8]>,
    },
    /// The client registered (log line).
    Registered {
        /// The user.
        user: Option<&'a [u8]>,
        /// Registration lifetime in seconds, when the log says.
        expires: Option<u32>,
    },
    /// An unauthenticated call was rejected (log line: no such extension, no
    /// permission), with the number dialled.
    CallRejected {
        /// Dialled number.
        user: Option<&'a [u8]>,
    },
    /// The server's own rate limiter flagged the client (Kamailio pike).
    Flooding,
    /// A log line showed the client's user agent.
    Agent {
        /// User-Agent value.
        agent: &'a [u8],
    },
    /// A request from the client that could not be decoded (packet copies).
    Undecodable,
    /// A request to voipwall's own HTTP API presented a token that is not
    /// one (unknown or revoked): someone guessing tokens.
    ApiAuthFailed,
    /// The server's log says it dropped a request from the client as
    /// malformed (Kamailio's sanity check): counted by the `undecodable`
    /// rule at once, since the PBX itself read and refused it.
    Malformed,
}

/// The fields of a received request the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// Method token.
    pub method: &'a [u8],
    /// Request-URI user (dialled number for INVITE).
    pub ruri_user: Option<&'a [u8]>,
    /// To user (registered identity for REGISTER).
    pub to_user: Option<&'a [u8]>,
    /// From user.
    pub from_user: Option<&'a [u8]>,
    /// User-Agent.
    pub user_agent: Option<&'a [u8]>,
    /// Call-ID.
    pub call_id: &'a [u8],
    /// CSeq number.
    pub cseq: u64,
    /// Whether credentials were present.
    pub has_auth: bool,
    /// Digest username, if credentials were present.
    pub auth_user: Option<&'a [u8]>,
    /// The nonce the credentials answer, if any: a failure counts as a
    /// verified guess only when the host issued it to this source.
    pub auth_nonce: Option<&'a [u8]>,
    /// More than one credentials header: the PBX reads the one for its own
    /// realm, so `auth_user` (the first's) need not be the account tried.
    pub several_credentials: bool,
    /// Received over a connection (TCP, TLS, WebSocket).
    pub stream: bool,
    /// The To header carries a tag: the request is inside a dialog (a
    /// re-INVITE is no new call).
    pub to_tag: bool,
    /// Expires header.
    pub expires: Option<u32>,
    /// Session-Expires header, seconds (a session-timer refresh carries
    /// it).
    pub session_expires: Option<u32>,
}

/// The fields of a sent response the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Response<'a> {
    /// Status code.
    pub code: u16,
    /// Call-ID.
    pub call_id: &'a [u8],
    /// CSeq number.
    pub cseq: u64,
    /// CSeq method.
    pub method: &'a [u8],
    /// Expires header (registration lifetime granted).
    pub expires: Option<u32>,
    /// The nonce a 401/407 challenge issues.
    pub nonce: Option<&'a [u8]>,
    /// Sent over a connection (TCP, TLS, WebSocket): the PBX answers on a
    /// connection only after the client completed a handshake from its
    /// address, so the answer itself proves the client receives there (a
    /// failure it reports is verified whatever the nonce).
    pub stream: bool,
}

impl<'a> Event<'a> {
    /// A request from `src` that detection could not read (see the
    /// `undecodable` rule: it counts once the PBX answers that source).
    pub fn undecodable(src: IpAddr, origin: &'a str) -> Self {
        Self {
            src,
            kind: EventKind::Undecodable,
            origin,
        }
    }

    /// The event for a decoded message seen on the wire. Requests are those
    /// the host received (`remote` is the packet's source); responses are
    /// those it sent (`remote` is the packet's destination). `None` when the
    /// message lacks what matching needs (Call-ID, CSeq).
    pub fn from_message(remote: IpAddr, msg: &Message<'a>, origin: &'a str) -> Option<Self> {
        let call_id = msg.call_id?;
        let (cseq, cseq_method) = msg.cseq_parts()?;
        let kind = match msg.start {
            StartLine::Request { method, .. } => EventKind::Request(Request {
                method,
                ruri_user: msg.ruri_user(),
                to_user: msg.to_user(),
                from_user: msg.from_user(),
                user_agent: msg.user_agent,
                call_id,
                cseq,
                has_auth: msg.has_auth(),
                auth_user: msg.auth_username(),
                auth_nonce: msg.auth_nonce(),
                several_credentials: msg.authorization_count > 1,
                stream: false,
                to_tag: msg.to.is_some_and(has_tag),
                expires: msg.expires_secs(),
                session_expires: msg.session_expires_secs(),
            }),
            StartLine::Response { code, .. } => EventKind::Response(Response {
                code,
                call_id,
                cseq,
                method: cseq_method,
                expires: msg.expires_secs().or_else(|| contact_expires(msg.contact?)),
                nonce: msg.challenge_nonce(),
                stream: false,
            }),
        };
        Some(Self {
            src: remote,
            kind,
            origin,
        })
    }
}

/// Whether a To or From value carries a `tag` parameter.
fn has_tag(v: &[u8]) -> bool {
    // Header parameters follow the URI: after the `>` of a name-addr (a
    // display name or the URI itself may hold `;tag=`, which is no tag: a
    // new call dressed so would pass as a re-INVITE), or after a bare
    // addr-spec.
    let mut in_quotes = false;
    let mut escaped = false;
    let mut lt = None;
    for (i, &b) in v.iter().enumerate() {
        if in_quotes {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b'<' => {
                lt = Some(i);
                break;
            }
            _ => {}
        }
    }
    let params = match lt {
        Some(i) => match v[i..].iter().position(|&b| b == b'>') {
            Some(j) => &v[i + j + 1..],
            None => return false,
        },
        None if in_quotes => return false,
        None => v,
    };
    params.split(|&b| b == b';').skip(1).any(|p| {
        let name = p.split(|&b| b == b'=').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"tag") && p.contains(&b'=')
    })
}

/// `expires=` parameter of a Contact value (a 200 OK to REGISTER carries the
/// granted lifetime there).
fn contact_expires(contact: &[u8]) -> Option<u32> {
    let lower = |b: &u8| b.to_ascii_lowercase();
    let pos = contact
        .windows(8)
        .position(|w| w.iter().map(lower).eq(b"expires=".iter().copied()))?;
    let digits = &contact[pos + 8..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_tag_is_a_header_parameter_not_a_piece_of_the_uri_or_name() {
        assert!(has_tag(b"<sip:1@x>;tag=abc"));
        assert!(has_tag(b"\"Bob\" <sip:1@x> ; TAG = abc"));
        assert!(has_tag(b"sip:1@x;tag=abc"));
        assert!(has_tag(b"<sip:1@x;user=phone>;foo=1;tag=abc"));
        assert!(!has_tag(b"<sip:1@x;tag=abc>"));
        assert!(!has_tag(b"\"x;tag=1 <y>\" <sip:1@x>"));
        assert!(!has_tag(b"\"x\\\";tag=1\" <sip:1@x>"));
        assert!(!has_tag(b"<sip:1@x"));
        assert!(!has_tag(b"<sip:1@x>;tagx=1"));
        assert!(!has_tag(b"<sip:1@x>;tag"));
        assert!(!has_tag(b""));
    }

    use super::*;

    #[test]
    fn response_event_takes_expires_from_contact() {
        let raw = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
Call-ID: c1\r\nCSeq: 2 REGISTER\r\nContact: <sip:1001@198.51.100.7>;expires=120\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        let ev = Event::from_message("198.51.100.7".parse().unwrap(), &m, "t").unwrap();
        let EventKind::Response(r) = ev.kind else {
            panic!("not a response: {ev:?}")
        };
        assert_eq!(
            (r.code, r.cseq, r.method, r.expires),
            (200, 2, &b"REGISTER"[..], Some(120))
        );
    }

    #[test]
    fn message_without_call_id_is_no_event() {
        let raw = b"OPTIONS sip:x@y SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        assert!(Event::from_message("198.51.100.7".parse().unwrap(), &m, "t").is_none());
    }
}
