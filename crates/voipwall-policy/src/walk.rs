//! A small typed walker over a spanned TOML tree that records every problem it
//! meets instead of stopping at the first (serde's derive stops at one).

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, FileId, did_you_mean};

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;
pub(crate) type Table<'i> = DeTable<'i>;

/// Walks one file, collecting diagnostics.
pub(crate) struct Walker<'d> {
    pub(crate) file: FileId,
    pub(crate) diags: &'d mut Vec<Diagnostic>,
}

impl Walker<'_> {
    pub(crate) fn error(&mut self, span: Range<usize>, msg: impl Into<String>, label: &str) {
        self.diags
            .push(Diagnostic::error(self.file, span, msg).label(label));
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Rejects keys not in `allowed`, with a suggestion.
    pub(crate) fn check_keys(&mut self, t: &Table<'_>, allowed: &[&str], ctx: &str) {
        for (k, _) in t.iter() {
            let key: &str = k.get_ref();
            if !allowed.contains(&key) {
                let mut d =
                    Diagnostic::error(self.file, k.span(), format!("unknown key `{key}` in {ctx}"))
                        .label("not a known key");
                d = match did_you_mean(key, allowed.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("expected one of: {}", allowed.join(", "))),
                };
                self.diags.push(d);
            }
        }
    }

    pub(crate) fn table<'v, 'i>(&mut self, v: &'v Value<'i>, what: &str) -> Option<&'v Table<'i>> {
        if let DeValue::Table(t) = v.get_ref() {
            Some(t)
        } else {
            self.error(
                v.span(),
                format!("{what} must be a table"),
                "expected a table",
            );
            None
        }
    }

    pub(crate) fn str<'v>(&mut self, v: &'v Value<'_>, what: &str) -> Option<&'v str> {
        if let Some(s) = v.get_ref().as_str() {
            Some(s)
        } else {
            self.error(
                v.span(),
                format!("{what} must be a string"),
                "expected a string",
            );
            None
        }
    }

    pub(crate) fn bool(&mut self, v: &Value<'_>, what: &str) -> Option<bool> {
        if let Some(b) = v.get_ref().as_bool() {
            Some(b)
        } else {
            self.error(
                v.span(),
                format!("{what} must be true or false"),
                "expected a boolean",
            );
            None
        }
    }

    /// An integer in `lo..=hi`.
    pub(crate) fn int(&mut self, v: &Value<'_>, what: &str, lo: i64, hi: i64) -> Option<i64> {
        let n = v
            .get_ref()
            .as_integer()
            .and_then(|i| i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok());
        match n {
            Some(n) if (lo..=hi).contains(&n) => Some(n),
            Some(n) => {
                self.error(
                    v.span(),
                    format!("{what} is {n}, outside {lo}..={hi}"),
                    "out of range",
                );
                None
            }
            None => {
                self.error(
                    v.span(),
                    format!("{what} must be an integer"),
                    "expected an integer",
                );
                None
            }
        }
    }

    /// An array of values (a single string is accepted as a one-element list).
    pub(crate) fn array<'v, 'i>(&mut self, v: &'v Value<'i>, what: &str) -> Vec<&'v Value<'i>> {
        match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            DeValue::String(_) => vec![v],
            _ => {
                self.error(
                    v.span(),
                    format!("{what} must be a list"),
                    "expected a list",
                );
                Vec::new()
            }
        }
    }

    /// An array of strings with their spans.
    pub(crate) fn str_list(&mut self, v: &Value<'_>, what: &str) -> Vec<(String, Range<usize>)> {
        let items = self.array(v, what);
        items
            .into_iter()
            .filter_map(|item| self.str(item, what).map(|s| (s.to_string(), item.span())))
            .collect()
    }

    /// A datetime or date, as unix seconds.
    pub(crate) fn timestamp(&mut self, v: &Value<'_>, what: &str) -> Option<i64> {
        let DeValue::Datetime(dt) = v.get_ref() else {
            self.error(
                v.span(),
                format!("{what} must be a date or date-time"),
                "expected e.g. 2027-01-31 or 2027-01-31T12:00:00Z",
            );
            return None;
        };
        let Some(date) = dt.date else {
            self.error(
                v.span(),
                format!("{what} needs a date"),
                "a time alone is not enough",
            );
            return None;
        };
        let days = days_from_civil(
            i64::from(date.year),
            i64::from(date.month),
            i64::from(date.day),
        );
        let mut secs = days * 86400;
        if let Some(t) = dt.time {
            secs += i64::from(t.hour) * 3600
                + i64::from(t.minute) * 60
                + i64::from(t.second.unwrap_or(0));
        }
        if let Some(toml::value::Offset::Custom { minutes }) = dt.offset {
            secs -= i64::from(minutes) * 60;
        }
        Some(secs)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Looks up `key` in a table.
pub(crate) fn get<'t, 'i>(t: &'t Table<'i>, key: &str) -> Option<&'t Value<'i>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
    }
}
