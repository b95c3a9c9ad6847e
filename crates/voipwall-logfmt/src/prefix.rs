//! Line prefixes: syslog headers (RFC 3164 and RFC 5424), and the
//! timestamps PBXs write themselves (`[2026-11-23 10:22:29]`,
//! `[Nov 23 10:22:29]`, `2026-11-23 10:22:29.123456 95.00% `). Returns the
//! time and the message after the prefix. Hand-written for speed; no panics.

use voipwall_detect::Timestamp;

/// What the caller knows that the line may not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Year for timestamps without one (syslog's `Nov 23 10:22:29`).
    pub year: i64,
    /// Seconds east of UTC for timestamps without a zone (local time).
    pub utc_offset: i64,
}

impl Default for Context {
    fn default() -> Self {
        Self {
            year: 2026,
            utc_offset: 0,
        }
    }
}

/// Splits a line into its time (if it has one) and its message.
pub fn split<'a>(line: &'a [u8], ctx: &Context) -> (Option<Timestamp>, &'a [u8]) {
    // RFC 5424: <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
    if line.first() == Some(&b'<')
        && let Some(gt) = line.iter().take(5).position(|&b| b == b'>')
    {
        let rest = &line[gt + 1..];
        if let Some(r) = rest.strip_prefix(b"1 ") {
            let (ts, r) = word(r);
            let at = iso(ts, ctx).map(|(t, _)| t);
            let mut r = r;
            // HOSTNAME APP-NAME PROCID MSGID
            for _ in 0..4 {
                r = word(r).1;
            }
            // Structured data: "-" or [..]...
            let r = if r.first() == Some(&b'[') {
                // SD-ELEMENTs: [id k="v" ...][...]; values may hold \" and \].
                let mut end = r.len();
                let (mut quoted, mut escaped) = (false, false);
                for (i, &b) in r.iter().enumerate() {
                    match b {
                        _ if escaped => escaped = false,
                        b'\\' if quoted => escaped = true,
                        b'"' => quoted = !quoted,
                        b']' if !quoted && r.get(i + 1) != Some(&b'[') => {
                            end = i + 1;
                            break;
                        }
                        _ => {}
                    }
                }
                &r[end.min(r.len())..]
            } else {
                word(r).1
            };
            return (at, trim_start(r));
        }
        return split_inner(rest, ctx);
    }
    split_inner(line, ctx)
}

fn split_inner<'a>(line: &'a [u8], ctx: &Context) -> (Option<Timestamp>, &'a [u8]) {
    // RFC 3164: "Nov 23 10:22:29 host tag[pid]: msg".
    if let Some(t) = bsd(line, ctx) {
        let r = &line[15..];
        let r = word(trim_start(r)).1; // host
        return (Some(t), after_tag(r));
    }
    // "[2026-11-23 10:22:29] ..." or "[Nov 23 10:22:29] ..." (Asterisk).
    if line.first() == Some(&b'[')
        && let Some(close) = line.iter().take(40).position(|&b| b == b']')
    {
        let inner = &line[1..close];
        let t = iso(inner, ctx).map(|(t, _)| t).or_else(|| bsd(inner, ctx));
        if t.is_some() {
            return (t, trim_start(&line[close + 1..]));
        }
    }
    // ISO at the start: FreeSWITCH "2026-11-23 10:22:29.123456 [95.00% ]",
    // or a journal "2026-11-23T10:22:29+0000 host tag: msg".
    if let Some((t, used)) = iso(line, ctx) {
        let r = &line[used..];
        if line.get(10) == Some(&b'T') {
            let r = word(trim_start(r)).1;
            return (Some(t), after_tag(r));
        }
        let r = trim_start(r);
        // FreeSWITCH's optional CPU idle field: "95.53% ".
        let (w, after) = word(r);
        let r = if w.last() == Some(&b'%') && w.len() <= 8 {
            after
        } else {
            r
        };
        return (Some(t), r);
    }
    (None, line)
}

/// After the host: `tag[pid]: ` or `tag: ` (up to 48 bytes), else unchanged.
fn after_tag(r: &[u8]) -> &[u8] {
    let r = trim_start(r);
    match r.iter().take(48).position(|&b| b == b':') {
        Some(c) if r.get(c + 1) == Some(&b' ') && !r[..c].contains(&b' ') => &r[c + 2..],
        _ => r,
    }
}

fn word(s: &[u8]) -> (&[u8], &[u8]) {
    let s = trim_start(s);
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    (&s[..end], trim_start(&s[end..]))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

fn num(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |a, &b| a * 10 + u32::from(b - b'0')))
}

#[allow(clippy::too_many_arguments)]
fn local(
    ctx: &Context,
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    ms: u32,
) -> Option<Timestamp> {
    let t = Timestamp::from_civil(y, mo, d, h, mi, s, ms)?;
    let off = ctx.utc_offset.saturating_mul(1000);
    let v = i64::try_from(t.0).ok()?.checked_sub(off)?;
    u64::try_from(v).ok().map(Timestamp)
}

/// `Nov 23 10:22:29` (day may be space-padded) at the start of `s`.
fn bsd(s: &[u8], ctx: &Context) -> Option<Timestamp> {
    if s.len() < 15 || s[3] != b' ' || s[6] != b' ' || s[9] != b':' || s[12] != b':' {
        return None;
    }
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let mo = MONTHS.iter().position(|m| &s[..3] == *m)?;
    let day = if s[4] == b' ' {
        num(&s[5..6])?
    } else {
        num(&s[4..6])?
    };
    let mo = u32::try_from(mo + 1).expect("12 months");
    local(
        ctx,
        ctx.year,
        mo,
        day,
        num(&s[7..9])?,
        num(&s[10..12])?,
        num(&s[13..15])?,
        0,
    )
}

/// `2026-11-23[ T]10:22:29[.frac][Z|+hh:mm|+hhmm]` at the start of `s`;
/// returns the time and the bytes used.
fn iso(s: &[u8], ctx: &Context) -> Option<(Timestamp, usize)> {
    if s.len() < 19
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b' ' | b'T')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let y = i64::from(num(&s[..4])?);
    let (mo, d, h, mi, sec) = (
        num(&s[5..7])?,
        num(&s[8..10])?,
        num(&s[11..13])?,
        num(&s[14..16])?,
        num(&s[17..19])?,
    );
    let mut i = 19;
    let mut ms = 0;
    if s.get(i) == Some(&b'.') || s.get(i) == Some(&b',') {
        let digits = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        let frac = &s[i + 1..i + 1 + digits];
        for (k, &b) in frac.iter().take(3).enumerate() {
            ms += u32::from(b - b'0') * [100, 10, 1][k];
        }
        i += 1 + digits;
    }
    let zone = match s.get(i) {
        Some(b'Z') => {
            i += 1;
            Some(0)
        }
        Some(&c @ (b'+' | b'-')) if s.get(i + 1).is_some_and(u8::is_ascii_digit) => {
            let z = &s[i + 1..];
            let (hh, mm, used) = if z.len() >= 5 && z[2] == b':' {
                (num(&z[..2])?, num(&z[3..5])?, 6)
            } else if z.len() >= 4 {
                (num(&z[..2])?, num(&z[2..4])?, 5)
            } else {
                return None;
            };
            i += used;
            let off = i64::from(hh * 3600 + mm * 60);
            Some(if c == b'-' { -off } else { off })
        }
        _ => None,
    };
    let t = match zone {
        Some(off) => local(
            &Context {
                year: y,
                utc_offset: off,
            },
            y,
            mo,
            d,
            h,
            mi,
            sec,
            ms,
        )?,
        None => local(ctx, y, mo, d, h, mi, sec, ms)?,
    };
    Some((t, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: &str) -> (String, String) {
        let (t, m) = split(line.as_bytes(), &Context::default());
        (
            t.map(|t| t.to_string()).unwrap_or_default(),
            String::from_utf8_lossy(m).into_owned(),
        )
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            at("[2026-11-23 10:22:29] NOTICE[1] chan_sip.c: x"),
            (
                "2026-11-23T10:22:29.000Z".into(),
                "NOTICE[1] chan_sip.c: x".into()
            )
        );
        assert_eq!(
            at("[Nov  3 10:22:29] NOTICE[1] x").0,
            "2026-11-03T10:22:29.000Z"
        );
        assert_eq!(
            at("2026-11-23 10:22:29.123456 95.53% [WARNING] sofia_reg.c:1 x"),
            (
                "2026-11-23T10:22:29.123Z".into(),
                "[WARNING] sofia_reg.c:1 x".into()
            )
        );
        assert_eq!(
            at("2026-11-23 10:22:29.123456 [WARNING] y").1,
            "[WARNING] y"
        );
        assert_eq!(
            at(
                "Nov 23 10:22:29 pbx sshd[811]: Failed password for root from 203.0.113.9 port 22 ssh2"
            ),
            (
                "2026-11-23T10:22:29.000Z".into(),
                "Failed password for root from 203.0.113.9 port 22 ssh2".into()
            )
        );
        assert_eq!(
            at("<34>Nov 23 10:22:29 pbx kamailio[5]: ALERT: x").1,
            "ALERT: x"
        );
        assert_eq!(
            at(
                "<165>1 2026-11-23T10:22:29.5+01:00 pbx asterisk 42 - [a b=\"c\\]\"][d e=\"f\"] NOTICE x"
            ),
            ("2026-11-23T09:22:29.500Z".into(), "NOTICE x".into())
        );
        assert_eq!(at("<165>1 2026-11-23T10:22:29Z pbx app - - - msg").1, "msg");
        assert_eq!(
            at("2026-11-23T10:22:29+0000 pbx sshd[1]: Invalid user a").1,
            "Invalid user a"
        );
        assert_eq!(
            at("no prefix here"),
            (String::new(), "no prefix here".into())
        );
        let ctx = Context {
            year: 2025,
            utc_offset: 3600,
        };
        assert_eq!(
            split(b"Jan  1 01:00:00 h t: m", &ctx)
                .0
                .unwrap()
                .to_string(),
            "2025-01-01T00:00:00.000Z"
        );
    }
}
