//! One pass over a SIP message (RFC 3261 section 7): the start line, then
//! every header line, remembering the slices the detection rules need. No
//! allocation; every accessor returns a borrow of the input.

use crate::SipError;

/// Request or response line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD uri SIP/2.0`.
    Request {
        /// Method token (`REGISTER`, `INVITE`, ...).
        method: &'a [u8],
        /// Request-URI as written.
        uri: &'a [u8],
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code, 100-699.
        code: u16,
        /// Reason phrase.
        reason: &'a [u8],
    },
}

/// A decoded message: borrowed slices of the input, found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Request or response line.
    pub start: StartLine<'a>,
    /// Values of the headers below (folded lines included, untrimmed inside).
    pub from: Option<&'a [u8]>,
    /// `To`.
    pub to: Option<&'a [u8]>,
    /// `Call-ID`.
    pub call_id: Option<&'a [u8]>,
    /// `CSeq`.
    pub cseq: Option<&'a [u8]>,
    /// The first (topmost) `Via`.
    pub via: Option<&'a [u8]>,
    /// How many Via values the message has (comma-separated ones counted).
    pub via_count: usize,
    /// `Contact`.
    pub contact: Option<&'a [u8]>,
    /// `User-Agent`.
    pub user_agent: Option<&'a [u8]>,
    /// `Server`.
    pub server: Option<&'a [u8]>,
    /// `Authorization` or `Proxy-Authorization` (the first).
    pub authorization: Option<&'a [u8]>,
    /// How many `Authorization` and `Proxy-Authorization` headers there
    /// were: the PBX reads the one whose realm is its own, so with several
    /// the first one's user need not be the account tried.
    pub authorization_count: usize,
    /// `WWW-Authenticate` or `Proxy-Authenticate` (a challenge).
    pub challenge: Option<&'a [u8]>,
    /// `Expires`.
    pub expires: Option<&'a [u8]>,
    /// `Session-Expires` (RFC 4028 session timers).
    pub session_expires: Option<&'a [u8]>,
    /// `Content-Length`.
    pub content_length: Option<&'a [u8]>,
    /// Bytes of head (leading CRLFs, start line, headers and the blank
    /// line); for an incomplete capture, the bytes of complete lines read.
    pub head_len: usize,
    /// Whether the head ended (blank line seen). Only
    /// [`Message::parse_captured`] returns incomplete messages.
    pub complete: bool,
}

/// Headers we keep, by full and compact name (RFC 3261 section 7.3.3).
#[derive(Clone, Copy)]
enum Slot {
    From,
    To,
    CallId,
    CSeq,
    Via,
    Contact,
    UserAgent,
    Server,
    Authorization,
    Challenge,
    Expires,
    SessionExpires,
    ContentLength,
}

fn slot(name: &[u8]) -> Option<Slot> {
    let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    Some(match name.len() {
        1 => match name[0].to_ascii_lowercase() {
            b'f' => Slot::From,
            b't' => Slot::To,
            b'i' => Slot::CallId,
            b'v' => Slot::Via,
            b'm' => Slot::Contact,
            b'l' => Slot::ContentLength,
            b'x' => Slot::SessionExpires,
            _ => return None,
        },
        _ if eq("from") => Slot::From,
        _ if eq("to") => Slot::To,
        _ if eq("call-id") => Slot::CallId,
        _ if eq("cseq") => Slot::CSeq,
        _ if eq("via") => Slot::Via,
        _ if eq("contact") => Slot::Contact,
        _ if eq("user-agent") => Slot::UserAgent,
        _ if eq("server") => Slot::Server,
        _ if eq("authorization") || eq("proxy-authorization") => Slot::Authorization,
        _ if eq("www-authenticate") || eq("proxy-authenticate") => Slot::Challenge,
        _ if eq("expires") => Slot::Expires,
        _ if eq("session-expires") => Slot::SessionExpires,
        _ if eq("content-length") => Slot::ContentLength,
        _ => return None,
    })
}

/// Longest head we look at; a bigger one is refused rather than scanned.
/// As large as a UDP datagram: kamailio (BUF_SIZE), FreeSWITCH and
/// Asterisk's PJSIP accept heads far beyond a few kilobytes, and a head
/// the PBX reads must not hide from detection by being long.
pub const MAX_HEAD: usize = 65_535;

/// Index of the end of the line starting at `from` (the CR of CRLF, or a
/// bare LF), if there is one.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let lf = memchr::memchr(b'\n', rest)?;
    let end = from + lf;
    Some(if end > from && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    })
}

fn next_line(buf: &[u8], end: usize) -> usize {
    // Skip CRLF or LF.
    if buf.get(end) == Some(&b'\r') {
        end + 2
    } else {
        end + 1
    }
}

/// Trims SIP linear white space (SP, HT, CR, LF) at both ends.
pub fn trim(v: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = v.iter().position(|b| !is_ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ws(b)).map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

impl<'a> Message<'a> {
    /// Decodes the head of one message. The body is not looked at. The
    /// head must be complete (a blank line ends it).
    pub fn parse(buf: &'a [u8]) -> Result<Self, SipError> {
        Self::parse_inner(buf, false)
    }

    /// Decodes a captured copy that may have been cut short (an NFLOG
    /// snaplen, a capture's snaplen): every complete header line present
    /// is read, a line cut in the middle is not, and `complete` says
    /// whether the head ended.
    pub fn parse_captured(buf: &'a [u8]) -> Result<Self, SipError> {
        Self::parse_inner(buf, true)
    }

    fn parse_inner(buf: &'a [u8], captured: bool) -> Result<Self, SipError> {
        // CRLFs before the start line are ignored (RFC 3261 7.5; what
        // kamailio, Asterisk and FreeSWITCH do on every transport).
        let mut first = 0;
        while first < buf.len() && first < MAX_HEAD && matches!(buf[first], b'\r' | b'\n') {
            first += 1;
        }
        let first_end = line_end(buf, first).ok_or(SipError::Truncated)?;
        if first_end > MAX_HEAD {
            return Err(SipError::TooLong);
        }
        let start = parse_start(&buf[first..first_end])?;
        let mut m = Self {
            start,
            from: None,
            to: None,
            call_id: None,
            cseq: None,
            via: None,
            via_count: 0,
            authorization_count: 0,
            contact: None,
            user_agent: None,
            server: None,
            authorization: None,
            challenge: None,
            expires: None,
            session_expires: None,
            content_length: None,
            head_len: 0,
            complete: true,
        };
        let mut pos = next_line(buf, first_end);
        let cut = |m: &mut Self, at: usize| {
            m.head_len = at.min(buf.len());
            m.complete = false;
        };
        loop {
            if pos > MAX_HEAD {
                return Err(SipError::TooLong);
            }
            let Some(end) = line_end(buf, pos) else {
                if captured {
                    cut(&mut m, pos);
                    return Ok(m);
                }
                return Err(SipError::Truncated);
            };
            if end == pos {
                m.head_len = next_line(buf, end).min(buf.len());
                return Ok(m);
            }
            // A header value may continue on lines that start with SP or HT.
            let mut value_end = end;
            let mut next = next_line(buf, end);
            let mut folded_cut = false;
            while matches!(buf.get(next), Some(b' ' | b'\t')) {
                match line_end(buf, next) {
                    Some(e) => {
                        value_end = e;
                        next = next_line(buf, value_end);
                    }
                    None => {
                        folded_cut = true;
                        break;
                    }
                }
            }
            if folded_cut {
                if captured {
                    cut(&mut m, pos);
                    return Ok(m);
                }
                return Err(SipError::Truncated);
            }
            let line = &buf[pos..value_end];
            let colon = memchr::memchr(b':', line).ok_or(SipError::BadHeader)?;
            let name = trim(&line[..colon]);
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                return Err(SipError::BadHeader);
            }
            let value = &line[colon + 1..];
            if let Some(s) = slot(name) {
                let target = match s {
                    Slot::From => &mut m.from,
                    Slot::To => &mut m.to,
                    Slot::CallId => &mut m.call_id,
                    Slot::CSeq => &mut m.cseq,
                    Slot::Via => {
                        m.via_count += 1 + value.iter().filter(|&&b| b == b',').count();
                        &mut m.via
                    }
                    Slot::Contact => &mut m.contact,
                    Slot::UserAgent => &mut m.user_agent,
                    Slot::Server => &mut m.server,
                    Slot::Authorization => {
                        m.authorization_count += 1;
                        &mut m.authorization
                    }
                    Slot::Challenge => &mut m.challenge,
                    Slot::Expires => &mut m.expires,
                    Slot::SessionExpires => &mut m.session_expires,
                    Slot::ContentLength => &mut m.content_length,
                };
                // The first occurrence wins (the topmost Via).
                if target.is_none() {
                    *target = Some(trim(value));
                }
            }
            pos = next;
        }
    }

    /// The method of a request, or of the CSeq of a response.
    pub fn method(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => self.cseq_parts().map(|(_, m)| m),
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// User part of the Request-URI (`sip:1001@host` → `1001`).
    pub fn ruri_user(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Request { uri, .. } => uri_user(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// User part of the From URI.
    pub fn from_user(&self) -> Option<&'a [u8]> {
        self.from.and_then(addr_user)
    }

    /// User part of the To URI.
    pub fn to_user(&self) -> Option<&'a [u8]> {
        self.to.and_then(addr_user)
    }

    /// CSeq number and method. The number is read as 64 bits: RFC 3261
    /// says 32, but kamailio answers larger ones, so detection must read
    /// them too.
    pub fn cseq_parts(&self) -> Option<(u64, &'a [u8])> {
        let v = self.cseq?;
        let sp = v.iter().position(|b| b.is_ascii_whitespace())?;
        let num = std::str::from_utf8(&v[..sp]).ok()?.parse().ok()?;
        let method = trim(&v[sp..]);
        (!method.is_empty()).then_some((num, method))
    }

    /// `sent-by` of the top Via (`SIP/2.0/UDP 198.51.100.7:5060;branch=...` → `198.51.100.7:5060`).
    pub fn via_sent_by(&self) -> Option<&'a [u8]> {
        let v = self.via?;
        let v = v.split(|&b| b == b',').next()?;
        let after_proto = trim(v).splitn(2, |b| b.is_ascii_whitespace()).nth(1)?;
        let sent_by = trim(after_proto).split(|&b| b == b';').next()?;
        let s = trim(sent_by);
        (!s.is_empty()).then_some(s)
    }

    /// `branch` parameter of the top Via.
    pub fn via_branch(&self) -> Option<&'a [u8]> {
        let v = self.via?.split(|&b| b == b',').next()?;
        param(v, b"branch")
    }

    /// Whether the request carries credentials (Authorization or Proxy-Authorization).
    pub fn has_auth(&self) -> bool {
        self.authorization.is_some()
    }

    /// `username` of the Authorization header, without quotes.
    pub fn auth_username(&self) -> Option<&'a [u8]> {
        let v = self.authorization?;
        let mut rest = v;
        while let Some(i) = find(rest, b"username") {
            let after = trim(&rest[i + 8..]);
            if let Some(value) = after.strip_prefix(b"=") {
                let value = trim(value);
                return Some(match value.strip_prefix(b"\"") {
                    Some(q) => &q[..q.iter().position(|&b| b == b'"').unwrap_or(q.len())],
                    None => {
                        trim(&value[..value.iter().position(|&b| b == b',').unwrap_or(value.len())])
                    }
                });
            }
            rest = &rest[i + 8..];
        }
        None
    }

    /// `nonce` of the credentials (Authorization), without quotes.
    pub fn auth_nonce(&self) -> Option<&'a [u8]> {
        digest_param(self.authorization?, b"nonce")
    }

    /// `realm` of the credentials (Authorization), without quotes.
    pub fn auth_realm(&self) -> Option<&'a [u8]> {
        digest_param(self.authorization?, b"realm")
    }

    /// `nonce` of a challenge (WWW-Authenticate, Proxy-Authenticate).
    pub fn challenge_nonce(&self) -> Option<&'a [u8]> {
        digest_param(self.challenge?, b"nonce")
    }

    /// `Expires` as a number.
    pub fn expires_secs(&self) -> Option<u32> {
        std::str::from_utf8(self.expires?).ok()?.parse().ok()
    }

    /// `Session-Expires` as a number of seconds (its parameters, such as
    /// `;refresher=uac`, left out).
    pub fn session_expires_secs(&self) -> Option<u32> {
        let v = self.session_expires?;
        let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
        std::str::from_utf8(&v[..end]).ok()?.trim().parse().ok()
    }

    /// `Content-Length` as a number.
    pub fn content_len(&self) -> Option<usize> {
        std::str::from_utf8(self.content_length?).ok()?.parse().ok()
    }

    /// `User-Agent`, or `Server` for responses.
    pub fn agent(&self) -> Option<&'a [u8]> {
        self.user_agent.or(self.server)
    }
}

/// A parameter of a Digest header (`Digest realm="r", nonce="abc"`), without
/// quotes. Only whole parameter names match (`cnonce` is not `nonce`).
fn digest_param<'a>(v: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let v = trim(v);
    // Skip the scheme token.
    let body = match v.iter().position(|b| b.is_ascii_whitespace()) {
        Some(i) => &v[i..],
        None => return None,
    };
    let mut rest = body;
    loop {
        rest = trim(rest);
        let eq = rest.iter().position(|&b| b == b'=')?;
        let key = trim(&rest[..eq]);
        let after = trim(&rest[eq + 1..]);
        let (value, next) = if let Some(q) = after.strip_prefix(b"\"") {
            let end = q.iter().position(|&b| b == b'"').unwrap_or(q.len());
            let tail = q.get(end + 1..).unwrap_or(&[]);
            (&q[..end], tail)
        } else {
            let end = after.iter().position(|&b| b == b',').unwrap_or(after.len());
            (trim(&after[..end]), &after[end..])
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(value);
        }
        let comma = next.iter().position(|&b| b == b',')?;
        rest = &next[comma + 1..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn param<'a>(v: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    v.split(|&b| b == b';').skip(1).find_map(|p| {
        let p = trim(p);
        let eq = p.iter().position(|&b| b == b'=')?;
        trim(&p[..eq])
            .eq_ignore_ascii_case(name)
            .then(|| trim(&p[eq + 1..]))
    })
}

fn parse_start(line: &[u8]) -> Result<StartLine<'_>, SipError> {
    // Tokens are separated by runs of SP or HT, and trailing white space is
    // ignored: PBXs accept both, so detection reads both.
    let ws = |b: &u8| matches!(b, b' ' | b'\t');
    let line = &line[..line.iter().rposition(|b| !ws(b)).map_or(0, |i| i + 1)];
    let mut rest = line;
    let mut word = || -> Option<&[u8]> {
        let s = rest.iter().position(|b| !ws(b))?;
        let r = &rest[s..];
        let e = r.iter().position(ws).unwrap_or(r.len());
        rest = &r[e..];
        Some(&r[..e])
    };
    let a = word().ok_or(SipError::BadStartLine)?;
    let b = word().ok_or(SipError::BadStartLine)?;
    if a.eq_ignore_ascii_case(b"SIP/2.0") {
        let code: u16 = std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(SipError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(SipError::BadStartLine);
        }
        let reason = &rest[rest.iter().position(|b| !ws(b)).unwrap_or(rest.len())..];
        return Ok(StartLine::Response { code, reason });
    }
    let c = word().ok_or(SipError::BadStartLine)?;
    let token = |t: &[u8]| {
        !t.is_empty()
            && t.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(b))
    };
    if !token(a) || !c.eq_ignore_ascii_case(b"SIP/2.0") || word().is_some() {
        return Err(SipError::BadStartLine);
    }
    Ok(StartLine::Request { method: a, uri: b })
}

/// User part of a SIP URI (`sip:user@host`, `sips:user:pw@host;params`).
pub fn uri_user(uri: &[u8]) -> Option<&[u8]> {
    let uri = trim(uri);
    let colon = uri.iter().position(|&b| b == b':')?;
    let scheme = &uri[..colon];
    if !(scheme.eq_ignore_ascii_case(b"sip")
        || scheme.eq_ignore_ascii_case(b"sips")
        || scheme.eq_ignore_ascii_case(b"tel"))
    {
        return None;
    }
    let rest = &uri[colon + 1..];
    if scheme.eq_ignore_ascii_case(b"tel") {
        let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        return Some(&rest[..end]);
    }
    let at = rest.iter().position(|&b| b == b'@')?;
    let userinfo = &rest[..at];
    let user = &userinfo[..userinfo
        .iter()
        .position(|&b| b == b':')
        .unwrap_or(userinfo.len())];
    (!user.is_empty()).then_some(user)
}

/// User part of a name-addr or addr-spec (`"Bob" <sip:bob@host>;tag=1`).
pub fn addr_user(v: &[u8]) -> Option<&[u8]> {
    let v = trim(v);
    let uri = match v.iter().position(|&b| b == b'<') {
        Some(lt) => {
            let rest = &v[lt + 1..];
            &rest[..rest.iter().position(|&b| b == b'>')?]
        }
        None => &v[..v.iter().position(|&b| b == b';').unwrap_or(v.len())],
    };
    uri_user(uri)
}
