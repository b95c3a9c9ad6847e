//! Diagnostics: every problem found in a policy, with file, line, column and a
//! rustc-style snippet. Collected, never thrown one at a time.

use std::fmt::Write as _;
use std::ops::Range;

/// Index of a file in a [`SourceMap`].
pub type FileId = usize;

/// The text of every file that took part in a load, so diagnostics can quote it.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<(String, String)>,
    /// Byte offset of every line start, per file: `line_col` is a binary
    /// search, so locating 100,000 entries stays linear.
    line_starts: Vec<Vec<usize>>,
}

impl SourceMap {
    /// Registers a file and returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        self.files.push((name.into(), text));
        self.line_starts.push(starts);
        self.files.len() - 1
    }

    /// The name the file was registered under.
    pub fn name(&self, id: FileId) -> &str {
        self.files.get(id).map_or("<unknown>", |f| f.0.as_str())
    }

    /// The file's text.
    pub fn text(&self, id: FileId) -> &str {
        self.files.get(id).map_or("", |f| f.1.as_str())
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        let text = self.text(id);
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let starts = self
            .line_starts
            .get(id)
            .map_or(&[0usize][..], Vec::as_slice);
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let line_start = starts.get(line - 1).copied().unwrap_or(0);
        let col = text
            .get(line_start..offset)
            .map_or(0, |t| t.chars().count())
            + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy is refused.
    Error,
    /// The policy is accepted; the operator should look.
    Warning,
}

/// One problem, located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file it is in.
    pub file: FileId,
    /// Byte range of the offending text.
    pub span: Range<usize>,
    /// What is wrong, naming the value.
    pub message: String,
    /// Short text under the caret.
    pub label: String,
    /// A suggestion ("did you mean `sip`?").
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span` of `file`.
    pub fn error(file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file,
            span,
            message: message.into(),
            label: String::new(),
            help: None,
        }
    }

    /// A warning at `span` of `file`.
    pub fn warning(file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, span, message)
        }
    }

    /// Adds the caret label.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Adds a suggestion.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Renders the diagnostic rustc-style:
    ///
    /// ```text
    /// error: invalid network `192.168.1.300/24`
    ///  --> policy.toml:9:1
    ///   |
    /// 9 | "192.168.1.300/24" = "local"
    ///   | ^^^^^^^^^^^^^^^^^^ not an IP address or CIDR prefix
    /// ```
    pub fn render(&self, sources: &SourceMap) -> String {
        let text = sources.text(self.file);
        let (line, col) = sources.line_col(self.file, self.span.start);
        let line_text = text.lines().nth(line - 1).unwrap_or("");
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        let _ = writeln!(out, "{kind}: {}", self.message);
        let _ = writeln!(out, "{pad}--> {}:{line}:{col}", sources.name(self.file));
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line} | {line_text}");
        // Caret width: the span's characters on this line, at least one.
        let line_chars = line_text.chars().count();
        let span_chars = text
            .get(self.span.clone())
            .map_or(1, |s| s.lines().next().unwrap_or("").chars().count())
            .max(1);
        let width = span_chars.min(line_chars.saturating_sub(col - 1).max(1));
        let _ = write!(out, "{pad} | {}{}", " ".repeat(col - 1), "^".repeat(width));
        if !self.label.is_empty() {
            let _ = write!(out, " {}", self.label);
        }
        out.push('\n');
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }

    /// `file:line:col` of the diagnostic.
    pub fn location(&self, sources: &SourceMap) -> String {
        let (line, col) = sources.line_col(self.file, self.span.start);
        format!("{}:{line}:{col}", sources.name(self.file))
    }
}

/// Renders a list of diagnostics, sorted by location, with a closing summary line.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut sorted: Vec<&Diagnostic> = diags.iter().collect();
    sorted.sort_by_key(|d| (d.file, d.span.start, d.severity));
    let mut out = String::new();
    for d in &sorted {
        out.push_str(&d.render(sources));
        out.push('\n');
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        let _ = writeln!(
            out,
            "error: policy refused: {errors} error{}{}; nothing was applied",
            if errors == 1 { "" } else { "s" },
            if warnings > 0 {
                format!(
                    ", {warnings} warning{}",
                    if warnings == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            }
        );
    }
    out
}

/// The closest candidate to `input` within a small edit distance, for "did you mean".
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(input, c);
        let limit = (c.len().max(input.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let mut sm = SourceMap::default();
        let f = sm.add("p.toml", "a = 1\nbb = 2\n");
        assert_eq!(sm.line_col(f, 0), (1, 1));
        assert_eq!(sm.line_col(f, 6), (2, 1));
        assert_eq!(sm.line_col(f, 8), (2, 3));
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("sipp", ["sip", "iax2"]), Some("sip"));
        assert_eq!(
            did_you_mean("internt", ["internet", "local"]),
            Some("internet")
        );
        assert_eq!(did_you_mean("zzzzzz", ["sip", "iax2"]), None);
    }

    #[test]
    fn render_points_at_span() {
        let mut sm = SourceMap::default();
        let f = sm.add("p.toml", "x = 1\nrtp = \"80-90\"\n");
        let d = Diagnostic::error(f, 12..19, "bad rtp").label("below 1024");
        let r = d.render(&sm);
        assert!(r.contains("--> p.toml:2:7"), "{r}");
        assert!(r.contains("      ^^^^^^^ below 1024"), "{r}");
    }
}
