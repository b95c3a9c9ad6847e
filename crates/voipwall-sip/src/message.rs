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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    // The name, lowercased, in three words: one or two integer comparisons
    // instead of a byte loop per known name.
    if name.len() > 24 {
        return None;
    }
    let mut padded = [0u8; 24];
    padded[..name.len()].copy_from_slice(name);
    let w = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&padded[i * 8..i * 8 + 8]);
        swar::lower(u64::from_le_bytes(b))
    };
    let key = [w(0), w(1), w(2)];
    Some(match name.len() {
        1 => match key[0] as u8 {
            b'f' => Slot::From,
            b't' => Slot::To,
            b'i' => Slot::CallId,
            b'v' => Slot::Via,
            b'm' => Slot::Contact,
            b'l' => Slot::ContentLength,
            b'x' => Slot::SessionExpires,
            _ => return None,
        },
        n => {
            return NAMES
                .iter()
                .find(|(len, k, _)| *len == n && *k == key)
                .map(|&(_, _, s)| s);
        }
    })
}

/// A full name we keep (written lowercase): its length, and its words
/// packed as [`slot`] packs a name.
const fn known(name: &[u8], slot: Slot) -> (usize, [u64; 3], Slot) {
    (name.len(), swar::pack(name), slot)
}

/// The full names we keep, each made by [`known`].
const NAMES: [(usize, [u64; 3], Slot); 15] = [
    known(b"from", Slot::From),
    known(b"to", Slot::To),
    known(b"call-id", Slot::CallId),
    known(b"cseq", Slot::CSeq),
    known(b"via", Slot::Via),
    known(b"contact", Slot::Contact),
    known(b"user-agent", Slot::UserAgent),
    known(b"server", Slot::Server),
    known(b"authorization", Slot::Authorization),
    known(b"proxy-authorization", Slot::Authorization),
    known(b"www-authenticate", Slot::Challenge),
    known(b"proxy-authenticate", Slot::Challenge),
    known(b"expires", Slot::Expires),
    known(b"session-expires", Slot::SessionExpires),
    known(b"content-length", Slot::ContentLength),
];

/// Eight bytes at a time in a `u64` (little-endian: byte `i` of the input
/// is bits `8i..8i+8`).
mod swar {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    /// Up to 24 bytes, zero-padded, in three words.
    pub(super) const fn pack(s: &[u8]) -> [u64; 3] {
        let mut w = [0u64; 3];
        let mut i = 0;
        while i < s.len() {
            w[i / 8] |= (s[i] as u64) << (8 * (i % 8));
            i += 1;
        }
        w
    }

    /// ASCII lowercase of every byte: `A`-`Z` gain 0x20, nothing else
    /// changes. The sums stay below 0x100 in each byte, so no carry crosses
    /// into the next.
    pub(super) fn lower(w: u64) -> u64 {
        let low7 = w & !HIGH;
        let above_z = low7 + ONES * (0x7f - b'Z' as u64);
        let from_a = low7 + ONES * (0x80 - b'A' as u64);
        let upper = from_a & !above_z & !w & HIGH;
        w | (upper >> 2)
    }

    /// The bytes of `w` that stop a header name: `:`, or anything not a
    /// visible character (below 0x21, DEL, above 0x7f). The lowest set bit
    /// is exact; bits above it may be false (borrows), so only it is read.
    pub(super) fn name_stops(w: u64) -> u64 {
        let colon = w ^ (ONES * u64::from(b':'));
        let del = w ^ (ONES * 0x7f);
        let zero_of = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let below_visible = w.wrapping_sub(ONES * 0x21) & !w & HIGH;
        zero_of(colon) | zero_of(del) | below_visible | (w & HIGH)
    }
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

/// The common header line, read without the general path's second search:
/// a name of visible characters up to the colon, and a value on one line.
/// Gives the colon, the end of the value and the start of the next line, or
/// `None` for anything else (white space or a control byte in the name, no
/// colon, a folded value, no line end), which the general path then reads.
fn quick_line(buf: &[u8], pos: usize) -> Option<(usize, usize, usize)> {
    let mut colon = pos;
    // Eight bytes at a time while eight remain; the first stop decides.
    while let Some(chunk) = buf.get(colon..colon + 8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let stops = swar::name_stops(u64::from_le_bytes(b));
        if stops != 0 {
            colon += (stops.trailing_zeros() / 8) as usize;
            break;
        }
        colon += 8;
    }
    loop {
        match *buf.get(colon)? {
            b':' => break,
            b if b.is_ascii_graphic() => colon += 1,
            _ => return None,
        }
    }
    if colon == pos {
        return None;
    }
    let lf = colon + 1 + memchr::memchr(b'\n', buf.get(colon + 1..)?)?;
    let end = if buf[lf - 1] == b'\r' { lf - 1 } else { lf };
    let next = lf + 1;
    if matches!(buf.get(next), Some(b' ' | b'\t')) {
        return None;
    }
    Some((colon, end, next))
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
        Self::parse_inner(buf, false, true)
    }

    /// Decodes a captured copy that may have been cut short (an NFLOG
    /// snaplen, a capture's snaplen): every complete header line present
    /// is read, a line cut in the middle is not, and `complete` says
    /// whether the head ended.
    pub fn parse_captured(buf: &'a [u8]) -> Result<Self, SipError> {
        Self::parse_inner(buf, true, true)
    }

    /// [`Message::parse`] (`captured` false) or [`Message::parse_captured`]
    /// with every header line read by the general path, never the quick
    /// one: the reference the property tests hold the quick path to.
    #[doc(hidden)]
    pub fn parse_general(buf: &'a [u8], captured: bool) -> Result<Self, SipError> {
        Self::parse_inner(buf, captured, false)
    }

    fn parse_inner(buf: &'a [u8], captured: bool, quick: bool) -> Result<Self, SipError> {
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
            let (name, value, next) = match quick.then(|| quick_line(buf, pos)).flatten() {
                Some((colon, end, next)) => (&buf[pos..colon], &buf[colon + 1..end], next),
                None => {
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
                    (name, &line[colon + 1..], next)
                }
            };
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

#[cfg(test)]
mod tests {
    use super::{Slot, slot, swar};
    use proptest::prelude::*;

    /// Every name [`slot`] knows, as RFC 3261 spells it.
    const KNOWN: [(&str, Slot); 22] = [
        ("From", Slot::From),
        ("f", Slot::From),
        ("To", Slot::To),
        ("t", Slot::To),
        ("Call-ID", Slot::CallId),
        ("i", Slot::CallId),
        ("CSeq", Slot::CSeq),
        ("Via", Slot::Via),
        ("v", Slot::Via),
        ("Contact", Slot::Contact),
        ("m", Slot::Contact),
        ("User-Agent", Slot::UserAgent),
        ("Server", Slot::Server),
        ("Authorization", Slot::Authorization),
        ("Proxy-Authorization", Slot::Authorization),
        ("WWW-Authenticate", Slot::Challenge),
        ("Proxy-Authenticate", Slot::Challenge),
        ("Expires", Slot::Expires),
        ("Session-Expires", Slot::SessionExpires),
        ("x", Slot::SessionExpires),
        ("Content-Length", Slot::ContentLength),
        ("l", Slot::ContentLength),
    ];

    /// What [`slot`] must answer: a byte-by-byte comparison ignoring ASCII case.
    fn reference(name: &[u8]) -> Option<Slot> {
        KNOWN
            .iter()
            .find(|(k, _)| name.eq_ignore_ascii_case(k.as_bytes()))
            .map(|&(_, s)| s)
    }

    #[test]
    fn lowercase_of_every_byte_in_every_lane() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                let w = u64::from(b) << (8 * lane) | 0x4141_4141_4141_4141 & !(0xff << (8 * lane));
                let lowered = swar::lower(w).to_le_bytes();
                let mut want = w.to_le_bytes();
                want.make_ascii_lowercase();
                assert_eq!(lowered, want, "byte {b:#04x} in lane {lane}");
            }
        }
    }

    #[test]
    fn known_names_in_any_case() {
        for (name, s) in KNOWN {
            assert_eq!(slot(name.as_bytes()), Some(s), "{name}");
            assert_eq!(
                slot(name.to_ascii_uppercase().as_bytes()),
                Some(s),
                "{name}"
            );
            assert_eq!(
                slot(name.to_ascii_lowercase().as_bytes()),
                Some(s),
                "{name}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Names near the known ones (a byte changed, added or cut; any byte,
        /// non-ASCII included) are known exactly when a case-blind
        /// comparison says so.
        #[test]
        fn slot_is_a_case_blind_comparison(
            base in prop::sample::select(KNOWN.to_vec()),
            edit in 0u8..4, at in any::<prop::sample::Index>(), byte in any::<u8>(),
            junk in prop::collection::vec(any::<u8>(), 0..26),
        ) {
            let mut name: Vec<u8> = base.0.bytes().map(|b| if byte & 1 == 1 { b.to_ascii_uppercase() } else { b }).collect();
            match edit {
                0 => { let i = at.index(name.len()); name[i] = byte; }
                1 => name.insert(at.index(name.len() + 1), byte),
                2 => { name.truncate(at.index(name.len() + 1)); }
                _ => name = junk,
            }
            prop_assert_eq!(slot(&name), reference(&name));
        }

        /// The lowest stop [`swar::name_stops`] reports is the first byte
        /// that is `:` or not visible, in any word.
        #[test]
        fn the_first_stop_is_exact(bytes in any::<[u8; 8]>(), visible in any::<[bool; 8]>()) {
            // Mostly visible words, so the stop can sit in any lane.
            let mut b = bytes;
            for (x, v) in b.iter_mut().zip(visible) {
                if v {
                    *x = b'!' + *x % 94;
                }
            }
            let stops = swar::name_stops(u64::from_le_bytes(b));
            let first = b.iter().position(|&x| x == b':' || !x.is_ascii_graphic());
            prop_assert_eq!((stops != 0).then(|| (stops.trailing_zeros() / 8) as usize), first);
        }
    }
}
