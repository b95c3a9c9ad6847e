//! Line templates: literal text with `{field}` holes, e.g.
//! `chan_sip.c: Registration from '{user*}' failed for '{addr}' - Wrong password`.
//!
//! A template matches the end of a message (the server-written tail) and may
//! start anywhere in it. A hole ends at the next occurrence of the literal
//! that follows it: the first occurrence (lazy, `{name}`) or the last one that
//! still lets the rest match (greedy, `{name*}`). Holes: `addr` (the client
//! address, with an optional port, brackets or a `UDP:` prefix), `port`,
//! `user`, `ua`, `expires` (digits), `_` (skipped). `{{` is a literal brace.
//! A leading `^` anchors the template at the start of the message.
//!
//! Matching is a bounded backtracking over occurrences of literals, found
//! with memchr's memmem; lines are capped in length by the caller.

use memchr::memmem;

/// A capture kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hole {
    /// Client address.
    Addr,
    /// Port digits.
    Port,
    /// User, extension or account.
    User,
    /// User agent.
    Ua,
    /// Seconds.
    Expires,
    /// Skipped text.
    Skip,
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(Box<Lit>),
    Hole(Hole, bool),
}

/// A literal with its searchers built once (building one per search cost
/// a fifth of replay time).
#[derive(Debug, Clone)]
struct Lit {
    bytes: Vec<u8>,
    fwd: memmem::Finder<'static>,
    rev: memmem::FinderRev<'static>,
}

impl Lit {
    fn new(bytes: Vec<u8>) -> Self {
        Self {
            fwd: memmem::Finder::new(&bytes).into_owned(),
            rev: memmem::FinderRev::new(&bytes).into_owned(),
            bytes,
        }
    }
}

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    segs: Vec<Seg>,
    /// The nearest distinctive literals before and after `{addr}`: each must
    /// occur once in the line unless the template says the tail after the
    /// address is server-written.
    addr_markers: Vec<Lit>,
    /// The longest literal, for prefiltering.
    pub key: Vec<u8>,
    /// `^` at the start: the template must match from the message start.
    anchored: bool,
}

/// Captured byte ranges of one line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Captures<'a> {
    /// `{addr}` text.
    pub addr: Option<&'a [u8]>,
    /// `{user}` text.
    pub user: Option<&'a [u8]>,
    /// `{ua}` text.
    pub ua: Option<&'a [u8]>,
    /// `{expires}` text.
    pub expires: Option<&'a [u8]>,
}

/// Why a line that contained a template's literals did not yield captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The template does not match.
    NoMatch,
    /// The marker before `{addr}` occurs more than once: attacker-supplied
    /// text imitates the server's; no address is trusted from this line.
    Ambiguous,
}

impl Template {
    /// Compiles `src`; errors name the problem.
    pub fn compile(src: &str) -> Result<Self, String> {
        let (anchored, body) = match src.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, src),
        };
        let b = body.as_bytes();
        let mut segs: Vec<Seg> = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'{' if b.get(i + 1) == Some(&b'{') => {
                    lit.push(b'{');
                    i += 2;
                }
                b'}' if b.get(i + 1) == Some(&b'}') => {
                    lit.push(b'}');
                    i += 2;
                }
                b'{' => {
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == b'}')
                        .ok_or_else(|| format!("unclosed `{{` at byte {i} of `{src}`"))?;
                    let name = &body[i + 1..i + end];
                    let (name, greedy) = match name.strip_suffix('*') {
                        Some(n) => (n, true),
                        None => (name, false),
                    };
                    let hole = match name {
                        "addr" => Hole::Addr,
                        "port" => Hole::Port,
                        "user" => Hole::User,
                        "ua" => Hole::Ua,
                        "expires" => Hole::Expires,
                        "_" | "" => Hole::Skip,
                        other => {
                            return Err(format!(
                                "unknown field `{{{other}}}` in `{src}` (expected addr, port, user, ua, expires or _)"
                            ));
                        }
                    };
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(Box::new(Lit::new(std::mem::take(&mut lit)))));
                    }
                    if matches!(segs.last(), Some(Seg::Hole(..))) {
                        return Err(format!(
                            "two fields next to each other in `{src}`: put literal text between them"
                        ));
                    }
                    segs.push(Seg::Hole(hole, greedy));
                    i += end + 1;
                }
                c => {
                    lit.push(c);
                    i += 1;
                }
            }
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(Box::new(Lit::new(lit))));
        }
        let addrs = segs
            .iter()
            .filter(|s| matches!(s, Seg::Hole(Hole::Addr, _)))
            .count();
        if addrs != 1 {
            return Err(format!("`{src}` must have exactly one {{addr}}"));
        }
        let addr_at = segs
            .iter()
            .position(|s| matches!(s, Seg::Hole(Hole::Addr, _)))
            .expect("counted above");
        // The marker: the nearest literal before {addr} of 4 bytes or more
        // (a lone "/" or "'" is not distinctive).
        let distinctive = |s: &Seg| match s {
            Seg::Lit(l) if l.bytes.len() >= 4 => Some(Lit::clone(l)),
            _ => None,
        };
        let addr_markers = segs[..addr_at]
            .iter()
            .rev()
            .find_map(distinctive)
            .into_iter()
            .chain(segs[addr_at..].iter().find_map(distinctive))
            .collect();
        let key = segs
            .iter()
            .filter_map(|s| match s {
                Seg::Lit(l) => Some(&l.bytes),
                Seg::Hole(..) => None,
            })
            .max_by_key(|l| l.len())
            .cloned()
            .ok_or_else(|| format!("`{src}` has no literal text"))?;
        Ok(Self {
            segs,
            addr_markers,
            key,
            anchored,
        })
    }

    /// The literal the template ends with, if it ends with one: every line
    /// it matches ends with it.
    pub fn last_literal(&self) -> Option<&[u8]> {
        match self.segs.last() {
            Some(Seg::Lit(l)) => Some(&l.bytes),
            _ => None,
        }
    }

    /// Matches the template against the end of `line` (it may start anywhere).
    /// With `marker_unique`, the distinctive literals around `{addr}` must occur once.
    pub fn captures<'a>(&self, line: &'a [u8], marker_unique: bool) -> Result<Captures<'a>, Miss> {
        // The last segment, when literal, must end the line: a cheap
        // refusal before any search.
        if let Some(Seg::Lit(l)) = self.segs.last()
            && !ends_with(line, &l.bytes)
        {
            return Err(Miss::NoMatch);
        }
        let mut caps = Captures::default();
        // Implicit leading skip: try each start where the first literal occurs.
        let ok = match self.segs.first() {
            _ if self.anchored => self.walk(line, 0, 0, &mut caps, 0),
            Some(Seg::Lit(l)) => {
                let mut from = 0;
                let mut found = false;
                while let Some(p) = l.fwd.find(&line[from..]) {
                    let at = from + p;
                    caps = Captures::default();
                    if self.walk(line, at, 0, &mut caps, 0) {
                        found = true;
                        break;
                    }
                    from = at + 1;
                }
                found
            }
            _ => self.walk(line, 0, 0, &mut caps, 0),
        };
        if !ok {
            return Err(Miss::NoMatch);
        }
        if marker_unique
            && self
                .addr_markers
                .iter()
                .any(|m| m.fwd.find_iter(line).nth(1).is_some())
        {
            return Err(Miss::Ambiguous);
        }
        Ok(caps)
    }

    /// Matches segments `si..` at `pos`; the last segment must end the line.
    fn walk<'a>(
        &self,
        line: &'a [u8],
        pos: usize,
        si: usize,
        caps: &mut Captures<'a>,
        depth: u32,
    ) -> bool {
        // Backtracking is bounded: each hole tries at most 64 ends.
        if depth > 16 {
            return false;
        }
        let Some(seg) = self.segs.get(si) else {
            return pos == line.len();
        };
        match seg {
            Seg::Lit(l) => {
                line.get(pos..pos + l.bytes.len())
                    .is_some_and(|r| same(r, &l.bytes))
                    && self.walk(line, pos + l.bytes.len(), si + 1, caps, depth)
            }
            Seg::Hole(h, greedy) => {
                let rest = &line[pos..];
                match self.segs.get(si + 1) {
                    None => {
                        let v = rest;
                        valid(*h, v) && {
                            set(caps, *h, v);
                            true
                        }
                    }
                    Some(Seg::Lit(next)) => {
                        // Candidate ends in order, found one at a time: a
                        // lazy hole usually succeeds at its first end, so
                        // the rest of the line is not searched.
                        let attempt = |e: usize, caps: &mut Captures<'a>| {
                            let v = &rest[..e];
                            if !valid(*h, v) {
                                return false;
                            }
                            let saved = *caps;
                            set(caps, *h, v);
                            if self.walk(line, pos + e, si + 1, caps, depth + 1) {
                                return true;
                            }
                            *caps = saved;
                            false
                        };
                        if si + 2 == self.segs.len() {
                            // The literal ends the template, so it must end
                            // the line: that is the hole's only end (no
                            // search, and no copies of the literal inside
                            // the hole can push it out of reach).
                            rest.len()
                                .checked_sub(next.bytes.len())
                                .filter(|_| ends_with(rest, &next.bytes))
                                .is_some_and(|e| attempt(e, caps))
                        } else if *greedy {
                            next.rev.rfind_iter(rest).take(64).any(|e| attempt(e, caps))
                        } else {
                            next.fwd.find_iter(rest).take(64).any(|e| attempt(e, caps))
                        }
                    }
                    Some(Seg::Hole(..)) => false,
                }
            }
        }
    }
}

/// Whether two short byte strings are equal, compared inline: the
/// literals are a few dozen bytes, where a call to `memcmp` costs more
/// than the comparison.
#[inline]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// `hay.ends_with(end)`, compared inline.
#[inline]
pub(crate) fn ends_with(hay: &[u8], end: &[u8]) -> bool {
    hay.len() >= end.len() && same(&hay[hay.len() - end.len()..], end)
}

fn valid(h: Hole, v: &[u8]) -> bool {
    match h {
        Hole::Port | Hole::Expires => {
            !v.is_empty() && v.len() <= 10 && v.iter().all(u8::is_ascii_digit)
        }
        Hole::Addr => {
            !v.is_empty()
                && v.len() <= 64
                && v.iter()
                    .all(|b| b.is_ascii_hexdigit() || b".:[]%ABCDEFTUPLSWabcdefptculsw".contains(b))
        }
        Hole::User | Hole::Ua | Hole::Skip => true,
    }
}

fn set<'a>(caps: &mut Captures<'a>, h: Hole, v: &'a [u8]) {
    match h {
        Hole::Addr => caps.addr = Some(v),
        Hole::User => caps.user = Some(v),
        Hole::Ua => caps.ua = Some(v),
        Hole::Expires => caps.expires = Some(v),
        Hole::Port | Hole::Skip => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_the_closing_text_inside_a_field_do_not_hide_the_line() {
        // A Call-ID is the caller's: 70 copies of the server's closing
        // words in it once pushed the real end past the search's reach.
        let t = Template::compile(
            "Request '{_}' from '{user}' failed for '{addr}' (callid: {_}) - Failed to authenticate",
        )
        .unwrap();
        let callid = ") - Failed to authenticate".repeat(70);
        let line = format!(
            "res_pjsip: Request 'REGISTER' from '<sip:1@h>' failed for '203.0.113.9:5060' (callid: {callid}) - Failed to authenticate"
        );
        let c = t.captures(line.as_bytes(), false).unwrap();
        assert_eq!(c.addr, Some(&b"203.0.113.9:5060"[..]));
        // A closing literal that overlaps itself ("aa" in "aaa") ends the
        // line too.
        let t = Template::compile("x {addr} y{_}aa").unwrap();
        assert!(t.captures(b"x 203.0.113.9 yaaa", false).is_ok());
    }

    #[test]
    fn lazy_greedy_and_markers() {
        let t =
            Template::compile("Registration from '{user*}' failed for '{addr}' - Wrong password")
                .unwrap();
        let line = b"[x] NOTICE[1] chan_sip.c: Registration from '\"1001\" <sip:1001@h>' failed for '203.0.113.9:5060' - Wrong password";
        let c = t.captures(line, false).unwrap();
        assert_eq!(c.addr, Some(&b"203.0.113.9:5060"[..]));
        assert_eq!(c.user, Some(&b"\"1001\" <sip:1001@h>"[..]));
        // An injected copy of the server's text inside the From header.
        let evil = b"chan_sip.c: Registration from '<sip:x@h>' failed for '198.51.100.20:5060' - Wrong password' failed for '203.0.113.9:5060' - Wrong password";
        assert_eq!(
            t.captures(evil, false).unwrap().addr,
            Some(&b"203.0.113.9:5060"[..])
        );
        assert_eq!(t.captures(evil, true), Err(Miss::Ambiguous));
        assert_eq!(t.captures(b"something else", false), Err(Miss::NoMatch));
        assert!(Template::compile("no address here").is_err());
        assert!(Template::compile("{addr}{user}").is_err());
        assert!(
            Template::compile("x {bogus} {addr}")
                .unwrap_err()
                .contains("unknown field `{bogus}`")
        );
    }
}
