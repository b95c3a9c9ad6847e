//! The fast path for big allow and block lists: `[[block]]` entries that
//! hold only `address = "…"` (and an optional `description = "…"`), one
//! key per line, are read straight from the text instead of through the
//! TOML parser, which builds a spanned table per entry (100,000 entries
//! cost it more than the rest of an apply together).
//!
//! The entries are cut out of the text by overwriting them with spaces
//! (line ends kept), so every byte offset the TOML parser reports for the
//! rest of the file is the offset in the file, and each lifted entry keeps
//! the span the parser would have given its address. Anything this does
//! not recognise with certainty stays in the text for the parser: an entry
//! with another key, an escape, a multi-line string anywhere in the file,
//! or `allow`/`block` written any other way than as `[[allow]]`/`[[block]]`.

use std::ops::Range;

/// One entry read from the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lifted {
    /// `[[block]]` rather than `[[allow]]`.
    pub block: bool,
    /// The address as written.
    pub address: String,
    /// Its span, quotes included (as the TOML parser spans a string).
    pub span: Range<usize>,
    /// The description, empty when there is none.
    pub description: String,
}

/// TOML's whitespace is a space or a tab; Rust's `trim` takes more (a
/// no-break space, a form feed), which TOML refuses.
const WS: [char; 2] = [' ', '\t'];

/// Whether what is left of a line (a line end's `\r` already removed) is
/// nothing, or a comment TOML accepts (no control character but a tab).
fn blank_or_comment(rest: &str) -> bool {
    let t = rest.trim_matches(WS);
    t.is_empty()
        || (t.starts_with('#') && !t.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f))
}

/// `[[allow]]` or `[[block]]` alone on its line (whitespace and a comment
/// after it allowed): `Some(block)`.
fn header(t: &str) -> Option<bool> {
    let (block, rest) = if let Some(r) = t.strip_prefix("[[block]]") {
        (true, r)
    } else if let Some(r) = t.strip_prefix("[[allow]]") {
        (false, r)
    } else {
        return None;
    };
    blank_or_comment(rest).then_some(block)
}

/// `key = "value"` with a bare key, a basic string without escapes or
/// control characters, and nothing but whitespace or a comment after it:
/// (key, value, value's span with its quotes, relative to the line).
fn key_value(line: &str) -> Option<(&str, &str, Range<usize>)> {
    let lead = line.len() - line.trim_start_matches(WS).len();
    let t = &line[lead..];
    let key_len = t
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        .count();
    if key_len == 0 {
        return None;
    }
    let key = &t[..key_len];
    let rest = t[key_len..].trim_start_matches(WS);
    let rest = rest.strip_prefix('=')?;
    let rest_trimmed = rest.trim_start_matches(WS);
    let open = line.len() - rest_trimmed.len();
    let body = rest_trimmed.strip_prefix('"')?;
    let close = body.find('"')?;
    let value = &body[..close];
    if value.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return None;
    }
    let after = &body[close + 1..];
    blank_or_comment(after).then_some((key, value, open..open + close + 2))
}

/// A key or table name that is `allow` or `block` (bare or quoted)
/// followed by `=`, `.` or `]`: the list written some other way than as
/// `[[allow]]`/`[[block]]`.
fn names_a_list(s: &str) -> bool {
    // A quoted key with an escape can spell anything (`"\u0062lock"`).
    if s.starts_with(['"', '\'']) && s.contains('\\') {
        return true;
    }
    [
        "allow",
        "block",
        "\"allow\"",
        "\"block\"",
        "'allow'",
        "'block'",
    ]
    .iter()
    .any(|k| {
        s.strip_prefix(k)
            .is_some_and(|r| r.trim_start().starts_with(['=', '.', ']']))
    })
}

/// An entry being read.
struct Open {
    /// Offset of its header line.
    start: usize,
    block: bool,
    address: Option<(String, Range<usize>)>,
    description: Option<String>,
    /// Only lines the fast path reads with certainty so far.
    simple: bool,
}

/// Cuts the simple list entries out of `text`: the text to give the TOML
/// parser (same length, the entries overwritten with spaces) and the
/// entries in file order. `None` when the file has none, or is not one
/// whose entries can be cut out safely: `allow` or `block` written any
/// other way than as `[[allow]]`/`[[block]]`, or a multi-line string that
/// could hide a header.
pub(crate) fn lift(text: &str) -> Option<(String, Vec<Lifted>)> {
    if !(text.contains("[[block]]") || text.contains("[[allow]]"))
        || text.contains("\"\"\"")
        || text.contains("'''")
    {
        return None;
    }
    let mut out = text.as_bytes().to_vec();
    let mut lifted = Vec::new();
    let mut open: Option<Open> = None;
    let mut close = |open: Option<Open>, end: usize, out: &mut Vec<u8>| {
        let Some(Open {
            start,
            block,
            address: Some((address, span)),
            description,
            simple: true,
        }) = open
        else {
            return;
        };
        for b in &mut out[start..end] {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
        lifted.push(Lifted {
            block,
            address,
            span,
            description: description.unwrap_or_default(),
        });
    };
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        // A CRLF line end's `\r` is not part of the line; any other `\r`
        // stays, and TOML refuses it (so does the fast path, below).
        let line = text[pos..end].strip_suffix('\r').unwrap_or(&text[pos..end]);
        // The TOML lexer skips a byte order mark at the start of the file.
        let t = if pos == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        }
        .trim_start_matches(WS);
        match t.as_bytes().first() {
            Some(b'[') => {
                close(open.take(), pos, &mut out);
                if let Some(block) = header(t) {
                    open = Some(Open {
                        start: pos,
                        block,
                        address: None,
                        description: None,
                        simple: true,
                    });
                } else if t.contains('\\') || names_a_list(t.trim_start_matches(['[', ' ', '\t'])) {
                    return None;
                }
            }
            Some(b'a' | b'b' | b'"' | b'\'') if names_a_list(t) => return None,
            _ => {
                if let Some(o) = open.as_mut()
                    && !blank_or_comment(line)
                {
                    match key_value(line) {
                        Some(("address", v, span)) if o.address.is_none() => {
                            o.address = Some((v.to_string(), pos + span.start..pos + span.end));
                        }
                        Some(("description", v, _)) if o.description.is_none() => {
                            o.description = Some(v.to_string());
                        }
                        _ => o.simple = false,
                    }
                }
            }
        }
        pos = end + 1;
    }
    close(open.take(), text.len(), &mut out);
    if lifted.is_empty() {
        return None;
    }
    // Whole lines were overwritten byte for byte with spaces: still UTF-8.
    String::from_utf8(out).ok().map(|t| (t, lifted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_entries_are_lifted_and_their_bytes_blanked() {
        let text = "[interfaces]\neth0 = \"internet\"\n\n[[block]]\naddress = \"192.0.2.1\"  # x\ndescription = \"scanner\"\n\n[[allow]]\n  address=\"198.51.100.0/24\"\n[zones.internet]\nservices = [\"sip\"]\n";
        let (blank, l) = lift(text).unwrap();
        assert_eq!(blank.len(), text.len());
        assert_eq!(l.len(), 2);
        assert!(l[0].block && !l[1].block);
        assert_eq!(&text[l[0].span.clone()], "\"192.0.2.1\"");
        assert_eq!(&text[l[1].span.clone()], "\"198.51.100.0/24\"");
        assert_eq!(l[0].description, "scanner");
        assert!(!blank.contains("block") && !blank.contains("allow"));
        assert!(blank.contains("[zones.internet]") && blank.contains("eth0 = \"internet\""));
        assert_eq!(blank.lines().count(), text.lines().count());
        // CRLF line ends are line ends.
        let crlf = text.replace('\n', "\r\n");
        let (blank, l2) = lift(&crlf).unwrap();
        assert_eq!(l2.len(), 2);
        assert_eq!(&crlf[l2[1].span.clone()], "\"198.51.100.0/24\"");
        assert_eq!(blank.matches("\r\n").count(), crlf.matches("\r\n").count());
    }

    #[test]
    fn anything_else_stays_for_the_parser() {
        // Another key, an escape, no address, a key twice.
        for entry in [
            "[[block]]\naddress = \"192.0.2.1\"\nexpires = 2027-01-01\n",
            "[[block]]\naddress = \"192.0.2.\\u0031\"\n",
            "[[block]]\ndescription = \"x\"\n",
            "[[block]]\naddress = \"192.0.2.1\"\naddress = \"192.0.2.2\"\n",
            "[[block]]\naddress = \"192.0.2.1\" x\n",
            // Whitespace and comments TOML refuses: the parser says so.
            "[[block]]\naddress = \"192.0.2.1\"\u{a0}\n",
            "\u{a0}[[block]]\naddress = \"192.0.2.1\"\n",
            "[[block]] # x\u{c}\naddress = \"192.0.2.1\"\n",
            "[[block]]\naddress = \"192.0.2.1\"\r # x\n",
        ] {
            assert_eq!(lift(entry), None, "{entry}");
        }
        // The whole file, where `block` is written another way or a
        // multi-line string could hide a header.
        for text in [
            "block = []\n[[block]]\naddress = \"192.0.2.1\"\n",
            "[block]\n[[block]]\naddress = \"192.0.2.1\"\n",
            "[[block.x]]\n[[block]]\naddress = \"192.0.2.1\"\n",
            "x = \"\"\"\n[[block]]\naddress = \"192.0.2.1\"\n\"\"\"\n",
            "[[ \"block\" ]]\n[[block]]\naddress = \"192.0.2.1\"\n",
            "\"\\u0062lock\" = []\n[[block]]\naddress = \"192.0.2.1\"\n",
            "[\"\\u0062lock\"]\n[[block]]\naddress = \"192.0.2.1\"\n",
            "\u{feff}block = []\n[[block]]\naddress = \"192.0.2.1\"\n",
        ] {
            assert_eq!(lift(text), None, "{text}");
        }
    }
}
