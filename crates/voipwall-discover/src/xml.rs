//! A forgiving XML tokenizer for configuration files: start tags with their
//! attributes and line, end tags. Comments, processing instructions,
//! doctypes, CDATA and text are skipped. Malformed input ends the stream
//! early; it never panics (fuzzed with the FreeSWITCH reader).

/// One tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `<name a="b">` or `<name a="b"/>`.
    Start {
        /// Element name.
        name: String,
        /// Attributes in order, values with the five predefined entities decoded.
        attrs: Vec<(String, String)>,
        /// `/>`: no children.
        empty: bool,
        /// 1-based line of the `<`.
        line: usize,
    },
    /// `</name>`.
    End {
        /// Element name.
        name: String,
    },
}

fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Tokenizes `text`. The second value is `false` when the input was cut
/// short by malformed markup.
pub fn tokenize(text: &str) -> (Vec<Token>, bool) {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let advance = |from: usize, to: usize, line: &mut usize| {
        *line += b[from..to].iter().filter(|&&c| c == b'\n').count();
    };
    while i < b.len() {
        let Some(off) = b[i..].iter().position(|&c| c == b'<') else {
            break;
        };
        advance(i, i + off, &mut line);
        i += off;
        let rest = &text[i..];
        let skip_to = |end: &str| rest.find(end).map(|e| e + end.len());
        let skipped = if rest.starts_with("<!--") {
            Some(skip_to("-->"))
        } else if rest.starts_with("<![CDATA[") {
            Some(skip_to("]]>"))
        } else if rest.starts_with("<?") {
            Some(skip_to("?>"))
        } else if rest.starts_with("<!") {
            Some(skip_to(">"))
        } else {
            None
        };
        if let Some(n) = skipped {
            let Some(n) = n else { return (out, false) };
            advance(i, i + n, &mut line);
            i += n;
            continue;
        }
        let start_line = line;
        // Find the closing `>` outside quotes.
        let mut j = i + 1;
        let mut quote: Option<u8> = None;
        while j < b.len() {
            match (quote, b[j]) {
                (Some(q), c) if c == q => quote = None,
                (None, b'"' | b'\'') => quote = Some(b[j]),
                (None, b'>') => break,
                _ => {}
            }
            j += 1;
        }
        if j >= b.len() {
            return (out, false);
        }
        let inner = &text[i + 1..j];
        advance(i, j + 1, &mut line);
        i = j + 1;
        if let Some(name) = inner.strip_prefix('/') {
            out.push(Token::End {
                name: name.trim().to_string(),
            });
            continue;
        }
        let (inner, empty) = match inner.strip_suffix('/') {
            Some(s) => (s, true),
            None => (inner, false),
        };
        let name_end = inner
            .find(|c: char| c.is_whitespace())
            .unwrap_or(inner.len());
        let name = inner[..name_end].to_string();
        if name.is_empty() {
            return (out, false);
        }
        let mut attrs = Vec::new();
        let mut rest = inner[name_end..].trim_start();
        while !rest.is_empty() {
            let Some(eq) = rest.find('=') else { break };
            let key = rest[..eq].trim().to_string();
            let after = rest[eq + 1..].trim_start();
            let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                return (out, false);
            };
            let Some(close) = after[1..].find(q) else {
                return (out, false);
            };
            attrs.push((key, decode(&after[1..1 + close])));
            rest = after[close + 2..].trim_start();
        }
        out.push(Token::Start {
            name,
            attrs,
            empty,
            line: start_line,
        });
    }
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_attrs_lines() {
        let (t, ok) = tokenize(
            "<?xml version=\"1.0\"?>\n<!-- c\n -->\n<a x=\"1 &amp; 2\" y='>'>\n  <b/>\n</a>",
        );
        assert!(ok);
        assert_eq!(
            t,
            [
                Token::Start {
                    name: "a".into(),
                    attrs: vec![("x".into(), "1 & 2".into()), ("y".into(), ">".into())],
                    empty: false,
                    line: 4
                },
                Token::Start {
                    name: "b".into(),
                    attrs: vec![],
                    empty: true,
                    line: 5
                },
                Token::End { name: "a".into() },
            ]
        );
    }

    #[test]
    fn malformed_stops() {
        assert!(!tokenize("<a x=\"1>").1);
        assert!(!tokenize("<!-- open").1);
        assert!(!tokenize("< >").1);
    }
}
