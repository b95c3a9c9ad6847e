//! Other tables that see the same packets.
//!
//! nftables runs every base chain on a hook, ours and everyone else's: an
//! accept in our table does not stop `table inet filter` (ufw, firewalld,
//! iptables-nft, docker) from dropping the packet afterwards, and a drop
//! anywhere is final. `explain`, `apply`, `check --kernel` and `audit` name
//! those chains (voipwall-sys reads them over netlink); this module judges
//! what can be known without evaluating someone else's rules.

use serde::Serialize;

use crate::ir::Family;

/// A base chain in a table that is not ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignChain {
    /// `ip`, `ip6`, `inet`, `netdev`, `bridge`, `arp`.
    pub family: String,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// `prerouting`, `input`, `ingress`, `forward`, `output`, …
    pub hook: String,
    /// Numeric priority.
    pub priority: i64,
    /// `accept` or `drop`.
    pub policy: String,
    /// How many rules it holds.
    pub rules: usize,
}

/// What a foreign chain does to a packet for this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// No rules and policy drop: the packet is dropped there.
    Drops,
    /// It has rules (not evaluated here) and could drop the packet.
    MayDrop,
    /// No rules and policy accept: it changes nothing.
    Nothing,
}

impl ForeignChain {
    /// Whether an inbound packet of `family` addressed to this host passes
    /// through this chain.
    pub fn sees_inbound(&self, family: Family) -> bool {
        let fam = match self.family.as_str() {
            "inet" | "netdev" => true,
            "ip" => family == Family::V4,
            "ip6" => family == Family::V6,
            _ => false,
        };
        fam && matches!(self.hook.as_str(), "prerouting" | "input" | "ingress")
    }

    /// What it does to such a packet, as far as can be told without
    /// evaluating its rules.
    pub fn effect(&self) -> Effect {
        match (self.rules, self.policy.as_str()) {
            (0, "drop") => Effect::Drops,
            (0, _) => Effect::Nothing,
            _ => Effect::MayDrop,
        }
    }

    /// `table inet filter chain input (hook input, priority 0, policy drop, 3 rules)`.
    pub fn describe(&self) -> String {
        format!(
            "table {} {} chain {} (hook {}, priority {}, policy {}, {} rule{})",
            self.family,
            self.table,
            self.chain,
            self.hook,
            self.priority,
            self.policy,
            self.rules,
            if self.rules == 1 { "" } else { "s" }
        )
    }
}

/// One line per foreign chain that sees inbound traffic, for `apply`,
/// `check --kernel` and `audit`.
pub fn warnings(chains: &[ForeignChain]) -> Vec<String> {
    chains
        .iter()
        .filter(|c| c.sees_inbound(Family::V4) || c.sees_inbound(Family::V6))
        .filter_map(|c| {
            let what = match c.effect() {
                Effect::Drops => "drops every inbound packet voipwall accepts",
                Effect::MayDrop => {
                    "also filters inbound packets: it can drop what voipwall accepts"
                }
                Effect::Nothing => return None,
            };
            Some(format!("{}: {what}", c.describe()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(family: &str, hook: &str, policy: &str, rules: usize) -> ForeignChain {
        ForeignChain {
            family: family.into(),
            table: "filter".into(),
            chain: "input".into(),
            hook: hook.into(),
            priority: 0,
            policy: policy.into(),
            rules,
        }
    }

    #[test]
    fn which_chains_see_inbound_packets() {
        assert!(chain("inet", "input", "drop", 0).sees_inbound(Family::V4));
        assert!(chain("inet", "prerouting", "drop", 0).sees_inbound(Family::V6));
        assert!(chain("netdev", "ingress", "drop", 0).sees_inbound(Family::V6));
        assert!(!chain("ip", "input", "drop", 0).sees_inbound(Family::V6));
        assert!(chain("ip6", "input", "drop", 0).sees_inbound(Family::V6));
        assert!(!chain("inet", "output", "drop", 0).sees_inbound(Family::V4));
        assert!(!chain("bridge", "input", "drop", 0).sees_inbound(Family::V4));
    }

    #[test]
    fn an_empty_drop_chain_drops_and_warnings_name_only_what_matters() {
        assert_eq!(chain("inet", "input", "drop", 0).effect(), Effect::Drops);
        assert_eq!(
            chain("inet", "input", "accept", 3).effect(),
            Effect::MayDrop
        );
        assert_eq!(
            chain("inet", "input", "accept", 0).effect(),
            Effect::Nothing
        );
        let w = warnings(&[
            chain("inet", "input", "drop", 0),
            chain("inet", "input", "accept", 0),
            chain("ip", "output", "drop", 0),
        ]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "table inet filter chain input (hook input, priority 0, policy drop, 0 rules)"
            ),
            "{}",
            w[0]
        );
    }
}
