//! Other tables that see the same packets.
//!
//! nftables runs every base chain on a hook, ours and everyone else's: an
//! accept in our table does not stop `table inet filter` (ufw, firewalld,
//! iptables-nft, docker) from dropping the packet afterwards, and a drop
//! anywhere is final. `explain`, `apply`, `check --kernel` and `audit` name
//! those chains; this module reads them from `nft -j` output and judges what
//! can be known without evaluating someone else's rules.

use serde::Serialize;
use serde_json::Value;

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

fn objects(json: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.get("nftables").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// The base chains in `nft -j list ruleset` (or `list chains` plus the
/// foreign tables' rules) other than our table's. Text that is not nft JSON
/// gives nothing.
pub fn parse(json: &str, our_table: &str) -> Vec<ForeignChain> {
    let objs = objects(json);
    let mut out: Vec<ForeignChain> = Vec::new();
    for o in &objs {
        let Some(c) = o.get("chain") else { continue };
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (family, table) = (s("family"), s("table"));
        if family == "inet" && table == our_table {
            continue;
        }
        let Some(hook) = c.get("hook").and_then(Value::as_str) else {
            continue;
        };
        out.push(ForeignChain {
            family,
            table,
            chain: s("name"),
            hook: hook.to_string(),
            priority: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
            policy: c
                .get("policy")
                .and_then(Value::as_str)
                .unwrap_or("accept")
                .to_string(),
            rules: 0,
        });
    }
    for o in &objs {
        let Some(r) = o.get("rule") else { continue };
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        if let Some(c) = out
            .iter_mut()
            .find(|c| c.family == s("family") && c.table == s("table") && c.chain == s("chain"))
        {
            c.rules += 1;
        }
    }
    out.sort_by(|a, b| {
        (a.hook.as_str(), a.priority, &a.family, &a.table).cmp(&(
            b.hook.as_str(),
            b.priority,
            &b.family,
            &b.table,
        ))
    });
    out
}

/// The tables (family, name) that hold a base chain, other than ours: what
/// to list in full to count their rules.
pub fn hooked_tables(json: &str, our_table: &str) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = parse(json, our_table)
        .into_iter()
        .map(|c| (c.family, c.table))
        .collect();
    t.sort();
    t.dedup();
    t
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

    const LISTING: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "voipwall", "handle": 1}},
      {"chain": {"family": "inet", "table": "voipwall", "name": "vw_input", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"table": {"family": "inet", "name": "filter", "handle": 3}},
      {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"chain": {"family": "inet", "table": "filter", "name": "helper", "handle": 2}},
      {"chain": {"family": "ip6", "table": "nat", "name": "pre", "handle": 1, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
      {"chain": {"family": "ip", "table": "f", "name": "out", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}},
      {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": []}},
      {"rule": {"family": "inet", "table": "filter", "chain": "helper", "handle": 5, "expr": []}}
    ]}"#;

    #[test]
    fn our_table_and_regular_chains_are_left_out_and_rules_counted() {
        let c = parse(LISTING, "voipwall");
        let names: Vec<(&str, &str, usize)> = c
            .iter()
            .map(|c| (c.table.as_str(), c.chain.as_str(), c.rules))
            .collect();
        assert_eq!(
            names,
            [("filter", "input", 1), ("f", "out", 0), ("nat", "pre", 0)]
        );
        assert_eq!(c[0].effect(), Effect::MayDrop);
        assert!(c[0].sees_inbound(Family::V4) && c[0].sees_inbound(Family::V6));
        assert!(!c[1].sees_inbound(Family::V4), "output hook");
        assert!(c[2].sees_inbound(Family::V6) && !c[2].sees_inbound(Family::V4));
        assert_eq!(c[2].effect(), Effect::Nothing);
        assert_eq!(
            hooked_tables(LISTING, "voipwall"),
            [
                ("inet".to_string(), "filter".to_string()),
                ("ip".into(), "f".into()),
                ("ip6".into(), "nat".into())
            ]
        );
    }

    #[test]
    fn an_empty_drop_chain_drops_and_warnings_name_only_what_matters() {
        let mut c = parse(LISTING, "voipwall");
        c[0].rules = 0;
        assert_eq!(c[0].effect(), Effect::Drops);
        let w = warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "table inet filter chain input (hook input, priority 0, policy drop, 0 rules)"
            ),
            "{}",
            w[0]
        );
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(parse("not json", "voipwall").is_empty());
        assert!(parse(r#"{"nftables": [{"chain": 5}]}"#, "voipwall").is_empty());
    }
}
