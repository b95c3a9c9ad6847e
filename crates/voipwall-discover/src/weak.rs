//! Weak SIP secrets, by the PortSIP password rules: at least 8 characters,
//! letters and digits, no sequential run (1234, abcd, 4321), no repeated
//! run (222, aaa), not the extension number nor containing it.

use serde::Serialize;

/// Why a secret is weak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Weakness {
    /// Fewer than [`MIN_LEN`] characters.
    TooShort,
    /// No digit.
    NoDigit,
    /// No letter.
    NoLetter,
    /// Four or more consecutive ascending or descending characters.
    Sequential,
    /// Three or more equal characters in a row.
    Repeated,
    /// Equal to the extension or user name.
    EqualsUser,
    /// Contains the extension or user name.
    ContainsUser,
}

impl Weakness {
    /// What to tell the operator.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TooShort => "shorter than 8 characters",
            Self::NoDigit => "has no digit",
            Self::NoLetter => "has no letter",
            Self::Sequential => "has a sequential run like 1234 or abcd",
            Self::Repeated => "has a repeated run like 222 or aaa",
            Self::EqualsUser => "equals the extension/user name",
            Self::ContainsUser => "contains the extension/user name",
        }
    }
}

/// Minimum length.
pub const MIN_LEN: usize = 8;
/// Length of a sequential run that counts.
pub const SEQ_RUN: usize = 4;
/// Length of a repeated run that counts.
pub const REPEAT_RUN: usize = 3;

/// Every rule `secret` breaks, in a stable order; empty when it is fine.
pub fn check(secret: &str, user: &str) -> Vec<Weakness> {
    let mut out = Vec::new();
    let chars: Vec<char> = secret.chars().map(|c| c.to_ascii_lowercase()).collect();
    if chars.len() < MIN_LEN {
        out.push(Weakness::TooShort);
    }
    if !chars.iter().any(char::is_ascii_digit) {
        out.push(Weakness::NoDigit);
    }
    if !chars.iter().any(|c| c.is_alphabetic()) {
        out.push(Weakness::NoLetter);
    }
    if has_run(&chars, SEQ_RUN, |a, b| {
        same_class(a, b) && (b as i64 - a as i64).abs() == 1
    }) && monotonic_run(&chars)
    {
        out.push(Weakness::Sequential);
    }
    if has_run(&chars, REPEAT_RUN, |a, b| a == b) {
        out.push(Weakness::Repeated);
    }
    let user = user.to_ascii_lowercase();
    let lower: String = chars.iter().collect();
    if !user.is_empty() {
        if lower == user {
            out.push(Weakness::EqualsUser);
        } else if user.chars().count() >= 3 && lower.contains(&user) {
            out.push(Weakness::ContainsUser);
        }
    }
    out
}

fn same_class(a: char, b: char) -> bool {
    (a.is_ascii_digit() && b.is_ascii_digit()) || (a.is_ascii_lowercase() && b.is_ascii_lowercase())
}

/// A run of `n` characters where each neighbouring pair satisfies `step`.
fn has_run(chars: &[char], n: usize, step: impl Fn(char, char) -> bool) -> bool {
    let mut len = 1;
    for w in chars.windows(2) {
        if step(w[0], w[1]) {
            len += 1;
            if len >= n {
                return true;
            }
        } else {
            len = 1;
        }
    }
    false
}

/// A run of [`SEQ_RUN`] steps all +1 or all −1 (so `1212` is not sequential).
fn monotonic_run(chars: &[char]) -> bool {
    for dir in [1i64, -1] {
        if has_run(chars, SEQ_RUN, |a, b| {
            same_class(a, b) && b as i64 - a as i64 == dir
        }) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::Weakness::*;
    use super::*;

    #[test]
    fn table() {
        // (secret, extension, expected weaknesses)
        let cases: &[(&str, &str, &[Weakness])] = &[
            ("Xk9v2Lq7", "1001", &[]),
            ("s3cr3tPassw0rd", "1001", &[]),
            ("a1b2c3", "1001", &[TooShort]),
            ("abcdefgh", "1001", &[NoDigit, Sequential]),
            ("83729104", "1001", &[NoLetter]),
            ("1234", "1001", &[TooShort, NoLetter, Sequential]),
            ("pass1234word", "1001", &[Sequential]),
            ("Zyxw9m3k", "1001", &[Sequential]),
            ("9876q2kp", "1001", &[Sequential]),
            ("x7aaab2k", "1001", &[Repeated]),
            ("q222m8kz", "1001", &[Repeated]),
            ("1001", "1001", &[TooShort, NoLetter, EqualsUser]),
            ("Ext1001pw", "1001", &[ContainsUser]),
            ("k2p9x1001", "1001", &[ContainsUser]),
            ("1212k8m3", "1001", &[]),
            ("AbCd7x9q", "1001", &[Sequential]),
            ("", "1001", &[TooShort, NoDigit, NoLetter]),
            ("trunkpw9x", "", &[]),
            ("a9b8c7d6", "ab", &[]),
        ];
        for (secret, user, want) in cases {
            assert_eq!(
                &check(secret, user),
                want,
                "secret {secret:?} user {user:?}"
            );
        }
    }
}
