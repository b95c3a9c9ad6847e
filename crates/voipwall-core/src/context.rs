//! Loading: the catalog layers, the policy files, host facts. The I/O that
//! the pure crates ask for happens here.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use voipwall_nft::{CompileInput, Ruleset, compile};
use voipwall_policy::{
    Catalog, DataFile, Diagnostic, HostFacts, Policy, SourceMap, load, render_all, sshd_ports,
};

use crate::Invalid;

/// Catalog layers beyond the built-in one, in override order.
pub const LAYERS: &[&str] = &["/usr/share/voipwall", "/etc/voipwall"];

/// The `*.toml` files of a directory, sorted; none when it does not exist.
pub fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

/// The largest policy or catalog file read.
const MAX_POLICY_FILE: u64 = 16 << 20;

/// Reads a policy or catalog file: only a regular file of at most 16 MiB.
/// An include naming a FIFO, a device (/dev/zero) or a directory is an
/// error at once, never a hang or a read without end.
pub fn read_policy_file(p: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a FIFO, device or directory); refused".into());
    }
    let mut text = String::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(MAX_POLICY_FILE + 1).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_POLICY_FILE {
        return Err(format!(
            "larger than {} MiB; refused",
            MAX_POLICY_FILE >> 20
        ));
    }
    Ok(text)
}

/// Reads `services/*.toml` and `presets/*.toml` under `dir`.
fn layer_files(dir: &Path) -> Vec<DataFile> {
    let mut out = Vec::new();
    for kind in ["services", "presets"] {
        for p in toml_files(&dir.join(kind)) {
            if let (Ok(text), Some(name)) = (read_policy_file(&p), p.file_name()) {
                out.push(DataFile {
                    path: format!("{kind}/{}", name.to_string_lossy()),
                    layer: dir.display().to_string(),
                    text,
                });
            }
        }
    }
    out
}

/// The loaded catalog plus the sources its diagnostics refer to.
pub fn catalog(extra: &[PathBuf]) -> anyhow::Result<(Catalog, SourceMap)> {
    let mut files = DataFile::builtin();
    for l in LAYERS
        .iter()
        .map(PathBuf::from)
        .chain(extra.iter().cloned())
    {
        files.extend(layer_files(&l));
    }
    let mut sm = SourceMap::default();
    let (mut cat, diags) = Catalog::load(&files, &mut sm);
    cat.rule_ids = crate::detection::rules(extra)?
        .rules
        .iter()
        .map(|r| r.id.clone())
        .collect();
    if diags
        .iter()
        .any(|d| d.severity == voipwall_policy::Severity::Error)
    {
        return Err(Invalid(format!(
            "the service/preset catalog is invalid:\n{}",
            render_all(&diags, &sm)
        ))
        .into());
    }
    Ok((cat, sm))
}

/// Facts about this host (in the current network namespace).
pub fn host_facts() -> HostFacts {
    let sshd = std::fs::read_to_string("/etc/ssh/sshd_config")
        .ok()
        .map(|t| sshd_ports(&t))
        .filter(|p| !p.is_empty());
    HostFacts {
        addresses: voipwall_sys::nft::host_addresses(),
        sshd_ports: sshd,
        log_formats: voipwall_logfmt::Format::all_builtin()
            .into_iter()
            .map(|f| f.id)
            .collect(),
    }
}

/// One diagnostic, as `check --json` and the API give it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct DiagnosticView {
    /// `error` or `warning`.
    pub severity: String,
    /// `file:line:col`.
    pub location: String,
    /// What is wrong.
    pub message: String,
    /// Short text under the caret.
    pub label: String,
    /// A suggestion.
    pub help: Option<String>,
}

/// A policy text checked: every diagnostic at once.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CheckReply {
    /// No errors: the policy would load.
    pub ok: bool,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<DiagnosticView>,
}

/// Checks a policy given as text (the API's `policy/check`): the same
/// loader and catalog as `voipwall check`, named `name` in locations.
/// `include`s are not followed (a posted text must not read the host's
/// files): each is an error saying so. Nothing is compiled or applied.
pub fn check_text(
    name: &str,
    text: &str,
    extra_catalog: &[PathBuf],
    facts: &HostFacts,
) -> anyhow::Result<CheckReply> {
    let (catalog, _) = catalog(extra_catalog)?;
    let mut read = |p: &str| {
        if p == name {
            Ok(text.to_string())
        } else {
            Err("a policy checked through the API cannot include files".to_string())
        }
    };
    let loaded = load(name, &mut read, &catalog, facts);
    let diagnostics = loaded
        .diagnostics
        .iter()
        .map(|d| DiagnosticView {
            severity: match d.severity {
                voipwall_policy::Severity::Error => "error".into(),
                voipwall_policy::Severity::Warning => "warning".into(),
            },
            location: d.location(&loaded.sources),
            message: d.message.clone(),
            label: d.label.clone(),
            help: d.help.clone(),
        })
        .collect();
    Ok(CheckReply {
        ok: !loaded.has_errors(),
        diagnostics,
    })
}

/// Everything a command needs about the policy.
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
    pub sources: SourceMap,
    /// What reading the PBX changed or noticed (`[discover]`).
    pub discovery: Vec<String>,
    /// What was read from the PBX (empty when `[discover]` is off).
    pub found: voipwall_discover::Discovery,
}

/// Loads and validates the policy; invalid policy is an [`Invalid`] error
/// carrying every diagnostic, rendered.
pub fn load_policy(
    path: &Path,
    extra_catalog: &[PathBuf],
    facts: &HostFacts,
) -> anyhow::Result<Loaded> {
    if !path.exists() {
        // A fresh install: say what to do, not just what is missing.
        return Err(Invalid(format!(
            "error: no policy at {p}: `voipwall init` writes one from this host that keeps \
             your SSH session (a commented example: /etc/voipwall/voipwall.toml.example); \
             then `voipwall check` and `voipwall apply --confirm 2m`",
            p = path.display()
        ))
        .into());
    }
    let (catalog, _) = catalog(extra_catalog)?;
    let main = path.display().to_string();
    let mut read = |p: &str| read_policy_file(Path::new(p));
    let loaded = load(&main, &mut read, &catalog, facts);
    if loaded.has_errors() {
        return Err(Invalid(render_all(&loaded.diagnostics, &loaded.sources)).into());
    }
    let mut policy = loaded.policy.context("policy missing despite no errors")?;
    for (db, wanted) in crate::geo::sources(&policy) {
        if let Err(e) = maxminddb::Reader::open_readfile(&db) {
            let names: Vec<String> = wanted.iter().map(ToString::to_string).collect();
            return Err(Invalid(format!(
                "error: [geo] {db}: not a readable mmdb database ({e}); the policy names {} from it",
                names.join(", ")
            ))
            .into());
        }
    }
    let (discovery, found) = discover_into(&mut policy);
    // Call rules: time zones from the system's database, trunks from the
    // PBX's configuration (both known only here, not to the policy crate).
    let mut refused = Vec::new();
    for r in &policy.call.rules {
        if let Some(h) = &r.hours
            && let Err(e) = jiff::tz::TimeZone::get(&h.tz)
        {
            refused.push(format!(
                "error: {}: call rule `{}`: time zone `{}` is not in this system's database ({e})",
                r.origin, r.name, h.tz
            ));
        }
        for f in &r.from {
            if let voipwall_policy::CallFrom::Trunk(t) = f
                && !policy.peers.iter().any(|p| p.name == *t)
            {
                let mut known: Vec<&str> = policy.peers.iter().map(|p| p.name.as_str()).collect();
                known.sort_unstable();
                known.dedup();
                refused.push(format!(
                    "error: {}: call rule `{}`: no trunk or peer named `{t}` in the PBX's configuration (known: {})",
                    r.origin,
                    r.name,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ));
            }
        }
    }
    if !refused.is_empty() {
        return Err(Invalid(refused.join("\n")).into());
    }
    Ok(Loaded {
        policy,
        warnings: loaded.diagnostics,
        sources: loaded.sources,
        discovery,
        found,
    })
}

/// Reads the PBX configuration the policy points at and folds trunks,
/// peers, ports and the RTP range into it. Returns what changed and what
/// the readers noticed.
pub fn discover_into(policy: &mut Policy) -> (Vec<String>, voipwall_discover::Discovery) {
    if !policy.discover.enabled {
        return Default::default();
    }
    let d =
        voipwall_discover::discover(&voipwall_discover::Disk, &voipwall_discover::roots(policy));
    let mut out = voipwall_discover::apply(policy, &d);
    out.extend(d.notes.iter().map(|n| format!("note: {n}")));
    (out, d)
}

/// Unix seconds now.
pub use crate::clock::unix_secs as now;

/// The DNS client a policy asks for: its `[dns] servers`, else the
/// name servers of /etc/resolv.conf.
pub fn dns_client(policy: &Policy) -> voipwall_sys::dns::Client {
    let servers = if policy.dns.servers.is_empty() {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| voipwall_dns::resolv_conf_servers(&t))
            .unwrap_or_default()
    } else {
        policy
            .dns
            .servers
            .iter()
            .map(|a| std::net::SocketAddr::new(*a, 53))
            .collect()
    };
    voipwall_sys::dns::Client {
        servers,
        timeout: std::time::Duration::from_millis(700),
        query_id: crate::random::query_id,
    }
}

/// What resolving a policy's hostnames gave.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Each name's addresses: a real answer, else its last good one.
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// The real answers (non-empty), to record as the last good.
    pub fresh: Vec<(String, Vec<IpAddr>)>,
    /// Names that did not resolve and kept their last good answer.
    pub kept: Vec<String>,
}

/// Resolves the policy's hostnames: A and AAAA, and SIP SRV targets for
/// peers that ask for them. A name that does not resolve (the resolver is
/// unreachable, as at every boot before the network is up) keeps its entry
/// in `last_good`: an outage never empties a name's sets.
pub fn resolve_names_keeping(
    policy: &Policy,
    last_good: &BTreeMap<String, Vec<IpAddr>>,
) -> Resolution {
    let names = policy.hostnames();
    let mut out = Resolution::default();
    if names.is_empty() {
        return out;
    }
    let client = dns_client(policy);
    for h in names {
        let srv = policy
            .peers
            .iter()
            .any(|p| p.srv && matches!(&p.net, voipwall_policy::NetSpec::Host(x) if *x == h));
        let addrs: Vec<IpAddr> = if client.servers.is_empty() {
            // No name server known: the system's resolver (no SRV, no TTL).
            (h.as_str(), 0)
                .to_socket_addrs()
                .map(|it| it.map(|sa| sa.ip()).collect())
                .unwrap_or_default()
        } else {
            client
                .resolve(&h, srv)
                .map(|r| r.addrs.into_iter().collect())
                .unwrap_or_default()
        };
        if !addrs.is_empty() {
            out.fresh.push((h.clone(), addrs.clone()));
            out.resolved.insert(h, addrs);
        } else if let Some(kept) = last_good.get(&h).filter(|a| !a.is_empty()) {
            out.kept.push(h.clone());
            out.resolved.insert(h, kept.clone());
        } else {
            out.resolved.insert(h, addrs);
        }
    }
    out
}

/// Resolves the policy's hostnames, with no last good answers to fall
/// back on (`compile`, `init`: nothing is applied from them).
pub fn resolve_names(policy: &Policy) -> BTreeMap<String, Vec<IpAddr>> {
    resolve_names_keeping(policy, &BTreeMap::new()).resolved
}

/// How old a recorded answer may be and still stand in for a name that
/// does not resolve: long enough for any outage, short enough that a name
/// whose record is gone for good stops protecting its old address.
pub const NAME_ANSWER_MAX_AGE_S: i64 = 30 * 86_400;

/// The last good answers the store of `state_dir` recorded within
/// [`NAME_ANSWER_MAX_AGE_S`] (none when there is no store yet; a store that
/// cannot be read is said so, since names that do not resolve then get
/// empty sets).
pub fn last_good_names(state_dir: &Path) -> BTreeMap<String, Vec<IpAddr>> {
    let db = state_dir.join("state.db");
    if !db.exists() {
        return BTreeMap::new();
    }
    let answers = voipwall_store::Store::open(&db)
        .map_err(|e| e.to_string())
        .and_then(|(s, _)| s.name_answers().map_err(|e| e.to_string()));
    match answers {
        Ok(m) => {
            let oldest = u64::try_from(now().saturating_sub(NAME_ANSWER_MAX_AGE_S))
                .unwrap_or(0)
                .saturating_mul(1000);
            m.into_iter()
                .filter(|(_, (_, at))| at.0 >= oldest)
                .map(|(h, (a, _))| (h, a))
                .collect()
        }
        Err(e) => {
            tracing::warn!(store = %db.display(), error = %e, "The names' last good answers cannot be read: a name that does not resolve now gets an empty set.");
            BTreeMap::new()
        }
    }
}

/// Resolves the policy's hostnames and compiles.
pub fn compile_policy(policy: &Policy) -> Ruleset {
    compile_resolved(policy, resolve_names(policy))
}

/// Compiles with these answers for the policy's names, now.
pub fn compile_resolved(policy: &Policy, resolved: BTreeMap<String, Vec<IpAddr>>) -> Ruleset {
    compile(
        policy,
        &CompileInput {
            resolved,
            // A database that cannot be read was refused when the policy
            // was loaded; one that broke since compiles empty, said.
            geo: crate::geo::networks(policy).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "A [geo] database cannot be read: its countries and ASes match nothing.");
                Default::default()
            }),
            now: now(),
        },
    )
}

/// Resolves the policy's hostnames, falling back on the last good answers
/// the store of `state_dir` recorded (what the apply path compiles with).
pub fn resolve_names_or_last_good(policy: &Policy, state_dir: &Path) -> Resolution {
    resolve_names_keeping(policy, &last_good_names(state_dir))
}
