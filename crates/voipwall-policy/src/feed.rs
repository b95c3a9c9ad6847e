//! Blocklist feeds' bodies (issue 22): APIBAN v2 pages, VoIPBL's update
//! list and plain IP/CIDR lists, parsed into networks, with everything a
//! feed must never make voipwall drop refused: the whole address space,
//! networks too wide to be a blocklist entry, the host's own addresses and
//! the protected networks (management, allow list, trunks and peers).
//!
//! Pure: the caller fetches the body (bounded) and says what is protected.
//! A body that is not what its format says is an error and nothing of it is
//! applied; a bad line in a list is counted and skipped.

use std::net::IpAddr;

use ipnet::IpNet;

/// A feed's format (`[[feed]] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// APIBAN v2: JSON pages, `{"ipaddress": [...], "ID": "<next>"}`.
    Apiban,
    /// VoIPBL: a header line, then one CIDR per line.
    Voipbl,
    /// One address or network per line; `#` comments and blank lines.
    Plain,
}

impl FeedFormat {
    /// From the policy's word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "apiban" => Some(Self::Apiban),
            "voipbl" => Some(Self::Voipbl),
            "plain" => Some(Self::Plain),
            _ => None,
        }
    }
}

/// The widest network a feed may list: an IPv4 /8, an IPv6 /16. Anything
/// wider is a broken or hostile list, not a blocklist entry.
pub const WIDEST_V4: u8 = 8;
/// See [`WIDEST_V4`].
pub const WIDEST_V6: u8 = 16;

/// Why an entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// The entry as the feed wrote it (cut to 80 characters).
    pub entry: String,
    /// 1-based line (0 for JSON bodies).
    pub line: usize,
    /// Why.
    pub reason: String,
    /// The entry makes the whole list suspect (wider than a feed may
    /// list, or covering this host): nothing of that fetch is applied.
    pub fatal: bool,
}

/// A parsed list: the networks to apply and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Parsed {
    /// Networks, sorted and deduplicated (host bits cleared).
    pub nets: Vec<IpNet>,
    /// Lines that are not an address or network (counted, skipped).
    pub malformed: Vec<Refused>,
    /// Entries refused: too wide, the host's own, protected.
    pub refused: Vec<Refused>,
}

impl Parsed {
    /// Why nothing of this list may be applied, if so: an entry that
    /// makes it suspect (see [`Guard::fatal`]), or not one line that is an
    /// address or network (an error page served as the list).
    pub fn refusal(&self) -> Option<String> {
        if let Some(r) = self.refused.iter().find(|r| r.fatal) {
            return Some(format!(
                "`{}`{}: {}; nothing of this list is applied",
                r.entry,
                if r.line > 0 {
                    format!(" (line {})", r.line)
                } else {
                    String::new()
                },
                r.reason
            ));
        }
        if self.nets.is_empty() && self.refused.is_empty() && !self.malformed.is_empty() {
            let m = &self.malformed[0];
            return Some(format!(
                "no line is an address or network (line {}: `{}`); nothing of this list is applied",
                m.line, m.entry
            ));
        }
        None
    }
}

/// What must never be taken from a feed.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The host's own addresses.
    pub own: Vec<IpAddr>,
    /// Management, allow list, trunks and peers, protected infrastructure.
    pub protected: Vec<IpNet>,
}

impl Guard {
    /// Why `net` must not be applied, if it must not.
    pub fn refuse(&self, net: &IpNet) -> Option<String> {
        let widest = widest(net);
        if net.prefix_len() < widest {
            return Some(format!(
                "/{} is wider than a feed may list (at most /{widest})",
                net.prefix_len()
            ));
        }
        if let Some(a) = self.own.iter().find(|a| net.contains(*a)) {
            return Some(format!("it covers this host's own address {a}"));
        }
        if let Some(p) = self
            .protected
            .iter()
            .find(|p| net.contains(&p.network()) || p.contains(&net.network()))
        {
            return Some(format!("it overlaps the protected network {p}"));
        }
        None
    }
}

impl Guard {
    /// Whether listing `net` makes a whole list suspect: wider than a feed
    /// may list, or covering this host's own address. A list that would
    /// drop everyone or the host itself is broken or hostile; one that
    /// lists a protected network (a trunk someone reported) only loses
    /// that entry.
    pub fn fatal(&self, net: &IpNet) -> bool {
        net.prefix_len() < widest(net) || self.own.iter().any(|a| net.contains(a))
    }
}

/// The widest prefix a feed may list for `net`'s family.
fn widest(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => WIDEST_V4,
        IpNet::V6(_) => WIDEST_V6,
    }
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

fn entry(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| "not a network".to_string())?
    } else {
        IpNet::from(
            s.parse::<IpAddr>()
                .map_err(|_| "not an address".to_string())?,
        )
    };
    // IPv4 written as IPv6 (::ffff:a.b.c.d) is the IPv4 address.
    let net = match net {
        IpNet::V6(n) => match n.addr().to_ipv4_mapped() {
            Some(v4) if n.prefix_len() >= 96 => {
                IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).map_err(|e| e.to_string())?
            }
            _ => net,
        },
        v4 => v4,
    };
    Ok(net.trunc())
}

fn take(out: &mut Parsed, guard: &Guard, raw: &str, line: usize) {
    match entry(raw) {
        Ok(net) => match guard.refuse(&net) {
            Some(reason) => out.refused.push(Refused {
                entry: cut(raw.trim()),
                line,
                reason,
                fatal: guard.fatal(&net),
            }),
            None => out.nets.push(net),
        },
        Err(reason) => out.malformed.push(Refused {
            entry: cut(raw.trim()),
            line,
            reason,
            fatal: false,
        }),
    }
}

fn finish(mut out: Parsed) -> Parsed {
    out.nets.sort_unstable();
    out.nets.dedup();
    out
}

/// A plain list: one address or network per line; `#` starts a comment,
/// blank lines are skipped; `skip` leading lines are a header.
pub fn parse_lines(text: &str, skip: usize, guard: &Guard) -> Parsed {
    let mut out = Parsed::default();
    for (i, l) in text.lines().enumerate().skip(skip) {
        let l = l.split('#').next().unwrap_or("").trim();
        // Some lists add a second column (a comment, a date): the first is
        // the entry.
        let Some(first) = l.split_whitespace().next() else {
            continue;
        };
        take(&mut out, guard, first, i + 1);
    }
    finish(out)
}

/// A whole body in `format` (APIBAN takes [`parse_apiban`] per page).
pub fn parse_list(format: FeedFormat, text: &str, guard: &Guard) -> Parsed {
    match format {
        // VoIPBL's first line is a header (a comment in the sample, free
        // text in the service's answers).
        FeedFormat::Voipbl => parse_lines(text, 1, guard),
        FeedFormat::Plain | FeedFormat::Apiban => parse_lines(text, 0, guard),
    }
}

/// One APIBAN answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApibanPage {
    /// Addresses, and the id to ask next.
    Page {
        /// What the page listed.
        parsed: Parsed,
        /// The next id.
        next: String,
    },
    /// Nothing newer (`ID` `none`): the list is complete.
    Done,
    /// The key was refused.
    Unauthorized,
    /// Too many requests: ask again later with the same id.
    RateLimited,
}

/// Parses one APIBAN v2 answer (any HTTP status: the service answers the
/// end of the list with 400 and the same shape).
pub fn parse_apiban(body: &str, guard: &Guard) -> Result<ApibanPage, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not APIBAN's JSON: {e}"))?;
    let id = v
        .get("ID")
        .and_then(serde_json::Value::as_str)
        .ok_or("no `ID` in the answer")?;
    match id {
        "none" => return Ok(ApibanPage::Done),
        "unauthorized" => return Ok(ApibanPage::Unauthorized),
        _ => {}
    }
    match v.get("ipaddress") {
        Some(serde_json::Value::String(s)) if s.contains("rate limit") => {
            Ok(ApibanPage::RateLimited)
        }
        Some(serde_json::Value::Array(list)) => {
            if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("`{}` is not an APIBAN id", cut(id)));
            }
            let mut out = Parsed::default();
            for a in list {
                match a.as_str() {
                    Some(s) => take(&mut out, guard, s, 0),
                    None => out.malformed.push(Refused {
                        entry: cut(&a.to_string()),
                        line: 0,
                        reason: "not a string".into(),
                        fatal: false,
                    }),
                }
            }
            Ok(ApibanPage::Page {
                parsed: finish(out),
                next: id.to_string(),
            })
        }
        _ => Err("`ipaddress` is neither a list nor a rate-limit message".into()),
    }
}

/// One element of a feed's kernel set: a network and when it expires (ms
/// since the epoch; `None` stays until the feed drops it).
pub type Entry = (IpNet, Option<u64>);

/// A feed's content as its sets must hold it: sorted, each network once
/// (the latest expiry wins, `None` above all), and every network another
/// network covers left out (the kernel refuses overlapping intervals, and
/// the wider one already drops it). A single address covered by a network
/// stays when it outlives the network (it is in the hash set, which never
/// conflicts with the interval set): a week's ban inside an hour's /24
/// must not end with the /24.
pub fn collapse(mut entries: Vec<Entry>) -> Vec<Entry> {
    let end = |e: &Entry| e.1.unwrap_or(u64::MAX);
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| end(b).cmp(&end(a))));
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    // The last network kept: sorted by network address, wider first, a
    // network covered by an earlier one is covered by the last one kept
    // (those are disjoint).
    let mut cover: Option<Entry> = None;
    for e in entries {
        if out.last().is_some_and(|k| k.0 == e.0) {
            continue;
        }
        let host = e.0.prefix_len() == e.0.max_prefix_len();
        if let Some(c) = cover.filter(|c| c.0.contains(&e.0))
            && (!host || end(&e) <= end(&c))
        {
            continue;
        }
        if !host {
            cover = Some(e);
        }
        out.push(e);
    }
    out
}

/// What moves in the kernel when a feed's content goes from `old` to
/// `new` (both [`collapse`]d): the entries to add (new networks, and
/// networks whose expiry changed: adding again sets the timeout) and the
/// networks to remove, which go first.
pub fn changes(old: &[Entry], new: &[Entry]) -> (Vec<Entry>, Vec<IpNet>) {
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    add.push(*b);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                remove.push(a.0);
                i += 1;
            }
            (Some(a), None) => {
                remove.push(a.0);
                i += 1;
            }
            (_, Some(b)) => {
                add.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn guard() -> Guard {
        Guard {
            own: vec!["203.0.113.1".parse().unwrap()],
            protected: vec!["198.51.100.0/24".parse().unwrap()],
        }
    }

    /// The sample bodies (tests/feeds/, the formats as the services serve
    /// them, with documentation addresses).
    fn sample(name: &str) -> &'static str {
        match name {
            "voipbl-update.txt" => include_str!("../tests/feeds/voipbl-update.txt"),
            "apiban-page1.json" => include_str!("../tests/feeds/apiban-page1.json"),
            "apiban-page2.json" => include_str!("../tests/feeds/apiban-page2.json"),
            "apiban-done.json" => include_str!("../tests/feeds/apiban-done.json"),
            "apiban-unauthorized.json" => include_str!("../tests/feeds/apiban-unauthorized.json"),
            "apiban-ratelimit.json" => include_str!("../tests/feeds/apiban-ratelimit.json"),
            _ => panic!("no sample {name}"),
        }
    }

    #[test]
    fn voipbl_skips_its_header_and_takes_each_network() {
        let p = parse_list(
            FeedFormat::Voipbl,
            sample("voipbl-update.txt"),
            &Guard::default(),
        );
        let nets: Vec<String> = p.nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            [
                "192.0.2.128/25",
                "198.18.0.0/24",
                "198.18.7.9/32",
                "203.0.113.50/32",
                "203.0.113.64/28"
            ]
        );
        assert!(p.malformed.is_empty() && p.refused.is_empty());
    }

    #[test]
    fn apiban_pages_end_and_refusals() {
        let g = guard();
        let ApibanPage::Page { parsed, next } =
            parse_apiban(sample("apiban-page1.json"), &g).unwrap()
        else {
            panic!("a page")
        };
        assert_eq!(next, "1764000000");
        // 198.51.100.77 is in a protected network: refused, not applied.
        let nets: Vec<String> = parsed.nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            ["203.0.113.41/32", "203.0.113.42/32", "2001:db8:41::7/128"]
        );
        assert_eq!(parsed.refused.len(), 1);
        assert!(parsed.refused[0].reason.contains("198.51.100.0/24"));
        assert_eq!(
            parse_apiban(sample("apiban-done.json"), &g),
            Ok(ApibanPage::Done)
        );
        assert_eq!(
            parse_apiban(sample("apiban-unauthorized.json"), &g),
            Ok(ApibanPage::Unauthorized)
        );
        assert_eq!(
            parse_apiban(sample("apiban-ratelimit.json"), &g),
            Ok(ApibanPage::RateLimited)
        );
        assert!(parse_apiban("<html>", &g).is_err());
        assert!(parse_apiban(r#"{"ipaddress":[],"ID":"../x"}"#, &g).is_err());
    }

    #[test]
    fn hostile_entries_are_refused_with_a_reason() {
        let text = "0.0.0.0/0\n::/0\n10.0.0.0/7\n203.0.113.1\n203.0.113.0/24\n198.51.100.9\nnot-an-ip\n192.0.2.7 # ok\n::ffff:192.0.2.8\n";
        let p = parse_list(FeedFormat::Plain, text, &guard());
        let nets: Vec<String> = p.nets.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["192.0.2.7/32", "192.0.2.8/32"]);
        let reasons: Vec<&str> = p.refused.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert!(reasons[0].contains("wider"));
        assert!(reasons[3].contains("own address"));
        assert!(reasons[4].contains("own address"));
        assert!(reasons[5].contains("protected"));
        assert_eq!(p.malformed.len(), 1);
        assert_eq!(p.malformed[0].line, 7);
    }

    #[test]
    fn collapse_keeps_the_widest_and_the_latest_expiry() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let got = collapse(vec![
            (n("192.0.2.7/32"), Some(5)),
            (n("192.0.2.0/24"), None),
            (n("198.51.100.1/32"), Some(5)),
            (n("198.51.100.1/32"), Some(9)),
            (n("2001:db8::1/128"), None),
            (n("2001:db8::1/128"), Some(3)),
            (n("192.0.2.128/25"), Some(1)),
        ]);
        assert_eq!(
            got,
            [
                (n("192.0.2.0/24"), None),
                (n("198.51.100.1/32"), Some(9)),
                (n("2001:db8::1/128"), None),
            ]
        );
        // A single address that outlives the network around it stays.
        let got = collapse(vec![
            (n("192.0.2.0/24"), Some(10)),
            (n("192.0.2.7/32"), Some(50)),
            (n("192.0.2.8/32"), Some(5)),
            (n("192.0.2.128/25"), Some(99)),
        ]);
        assert_eq!(
            got,
            [(n("192.0.2.0/24"), Some(10)), (n("192.0.2.7/32"), Some(50))]
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panic(text in ".{0,400}") {
            let p = parse_list(FeedFormat::Plain, &text, &guard());
            // Nothing taken is wide, own or protected.
            for n in &p.nets {
                prop_assert!(guard().refuse(n).is_none());
            }
            let _ = parse_apiban(&text, &guard());
        }

        #[test]
        fn applied_changes_give_the_new_content(a in proptest::collection::vec((0u32..64, 28u8..=32, proptest::option::of(0u64..4)), 0..40),
                                                 b in proptest::collection::vec((0u32..64, 28u8..=32, proptest::option::of(0u64..4)), 0..40)) {
            let content = |v: &[(u32, u8, Option<u64>)]| {
                collapse(v.iter().map(|(x, len, e)| {
                    let net = IpNet::new(IpAddr::from((0xc000_0200 + x).to_be_bytes()), *len).unwrap().trunc();
                    (net, *e)
                }).collect())
            };
            let (old, new) = (content(&a), content(&b));
            // Collapsed networks never overlap (the interval set's
            // condition); single addresses live in a hash set.
            let nets: Vec<&Entry> = new.iter().filter(|e| e.0.prefix_len() < 32).collect();
            for w in nets.windows(2) {
                prop_assert!(!w[0].0.contains(&w[1].0.network()));
            }
            let (add, remove) = changes(&old, &new);
            let mut got: Vec<Entry> = old.iter().filter(|x| !remove.contains(&x.0)).copied().collect();
            for e in add {
                got.retain(|x| x.0 != e.0);
                got.push(e);
            }
            got.sort_unstable();
            prop_assert_eq!(got, new);
        }

    }
}
