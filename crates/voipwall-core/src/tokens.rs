//! API tokens: created by the CLI, printed once, stored hashed (SHA-256 of
//! the token; the token is 32 random bytes, so a slow hash adds nothing).
//! The HTTP API looks a presented token up by its hash.

use sha2::{Digest as _, Sha256};
use voipwall_store::Store;

use crate::Invalid;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read and change.
    Admin,
    /// Read only.
    Read,
    /// The decisions stream only (a CrowdSec bouncer).
    Bouncer,
}

impl Role {
    /// Its name in the store and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Read => "read",
            Self::Bouncer => "bouncer",
        }
    }

    /// The role a stored name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "read" => Some(Self::Read),
            "bouncer" => Some(Self::Bouncer),
            _ => None,
        }
    }
}

/// The hash a token is stored and looked up by.
pub fn hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes from the kernel's random source, in hex: tokens, and the
/// dashboard's session ids and CSRF tokens.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    crate::random::hex(n)
}

/// A new token: `vwt_` and 32 bytes from the kernel's random source.
fn fresh() -> anyhow::Result<String> {
    Ok(format!("vwt_{}", random_hex(32)?))
}

/// `voipwall token create`: stores the hash, returns the token (shown once).
pub fn create(store: &mut Store, name: &str, role: Role) -> anyhow::Result<String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Invalid(format!(
            "error: token name `{name}`: 1 to 64 letters, digits, `-`, `_` or `.`"
        ))
        .into());
    }
    let token = fresh()?;
    let at = crate::safety::now();
    if !store.add_token(name, role.name(), &hash(&token), at)? {
        return Err(Invalid(format!(
            "error: a token named `{name}` exists (revoked ones keep their name: the audit log refers to it); choose another name"
        ))
        .into());
    }
    store.audit(
        at,
        "cli",
        "token-create",
        &format!("{name} ({})", role.name()),
    )?;
    Ok(token)
}

/// The token in force presented as `token`: its name and role; `None`
/// when it is not one; an error when the store cannot say.
pub fn check(
    store: &Store,
    token: &str,
) -> Result<Option<(String, Role)>, voipwall_store::StoreError> {
    Ok(store
        .token_by_hash(&hash(token))?
        .and_then(|(name, role)| Some((name, Role::parse(&role)?))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_shown_once_stored_hashed_and_revocable() {
        let mut s = Store::in_memory().unwrap();
        let t = create(&mut s, "ops", Role::Admin).unwrap();
        assert!(t.starts_with("vwt_") && t.len() == 68);
        assert_eq!(check(&s, &t).unwrap(), Some(("ops".into(), Role::Admin)));
        assert_eq!(check(&s, "vwt_00").unwrap(), None);
        assert!(
            create(&mut s, "ops", Role::Read).is_err(),
            "names are unique"
        );
        assert!(create(&mut s, "bad name", Role::Read).is_err());
        let other = create(&mut s, "grafana", Role::Read).unwrap();
        assert_ne!(t, other);
        assert!(s.revoke_token("ops", crate::safety::now()).unwrap());
        assert_eq!(check(&s, &t).unwrap(), None, "revoked");
        assert_eq!(
            check(&s, &other).unwrap(),
            Some(("grafana".into(), Role::Read))
        );
        // Only the hash is stored.
        assert!(
            s.tokens()
                .unwrap()
                .iter()
                .all(|r| !format!("{r:?}").contains(&t))
        );
    }
}
