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

/// The catalog layers the package installs (built in, /usr/share/voipwall):
/// they belong to the version that runs.
fn package_layers() -> Vec<DataFile> {
    let mut files = DataFile::builtin();
    files.extend(layer_files(Path::new(LAYERS[0])));
    files
}

/// The catalog layers the operator writes (/etc/voipwall, `--catalog`):
/// inputs a generation keeps.
fn operator_layers(extra: &[PathBuf]) -> Vec<DataFile> {
    LAYERS[1..]
        .iter()
        .map(PathBuf::from)
        .chain(extra.iter().cloned())
        .flat_map(|l| layer_files(&l))
        .collect()
}

/// The loaded catalog plus the sources its diagnostics refer to.
pub fn catalog(extra: &[PathBuf]) -> anyhow::Result<(Catalog, SourceMap)> {
    catalog_with(operator_layers(extra), extra)
}

/// The package's layers under the operator's `overrides`.
fn catalog_with(
    overrides: Vec<DataFile>,
    extra: &[PathBuf],
) -> anyhow::Result<(Catalog, SourceMap)> {
    let mut files = package_layers();
    files.extend(overrides);
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
        ..host_facts_formats()
    }
}

/// The facts this version knows without asking the host: its log formats.
fn host_facts_formats() -> HostFacts {
    HostFacts {
        log_formats: voipwall_logfmt::Format::all_builtin()
            .into_iter()
            .map(|f| f.id)
            .collect(),
        ..HostFacts::default()
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

/// This voipwall's version: the compiler a generation's inputs name.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a generation was compiled from: enough to compile it again without
/// reading the host, as the daemon does after an upgrade (the file on disk
/// may hold edits nobody applied).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Inputs {
    /// The voipwall that compiled them.
    pub version: String,
    /// The main policy file, as the loader named it.
    pub main: String,
    /// Every policy file read (the main one and its includes).
    pub files: BTreeMap<String, String>,
    /// The operator's catalog files (/etc/voipwall, `--catalog`) as
    /// `(layer, path, text)`; the package's own layers belong to the
    /// version that runs.
    pub catalog: Vec<(String, String, String)>,
    /// The host's addresses.
    pub addresses: Vec<IpAddr>,
    /// sshd's ports (`None`: unknown).
    pub sshd_ports: Option<Vec<u16>>,
    /// What `[discover]` read from the PBX (secrets left out).
    pub discovery: Option<voipwall_discover::Discovery>,
    /// The addresses the policy's names had.
    pub names: BTreeMap<String, Vec<IpAddr>>,
}

impl Inputs {
    /// What generation `g` stored: `None` when it kept nothing, an error
    /// when this version cannot read it.
    pub fn of(g: &voipwall_store::Generation) -> Option<Result<Self, serde_json::Error>> {
        g.inputs.as_deref().map(serde_json::from_str)
    }

    /// The same inputs, as compiled by this version.
    pub fn by_this_version(&self) -> Self {
        Self {
            version: VERSION.to_string(),
            ..self.clone()
        }
    }
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
    /// What it was loaded from (`names` left for the caller to fill).
    pub inputs: Inputs,
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
    let main = path.display().to_string();
    let mut read = |p: &str| read_policy_file(Path::new(p));
    load_with(
        &main,
        &mut read,
        operator_layers(extra_catalog),
        extra_catalog,
        facts,
        None,
    )
}

/// Loads a generation's stored inputs again, with this version's loader,
/// catalog and discovery folding: no policy, catalog override or PBX file
/// is read from disk. The package's own catalog and the `[geo]` databases
/// are this host's.
pub fn load_inputs(inputs: &Inputs, extra_catalog: &[PathBuf]) -> anyhow::Result<Loaded> {
    let mut read = |p: &str| {
        inputs
            .files
            .get(p)
            .cloned()
            .ok_or_else(|| "not among the generation's stored files".to_string())
    };
    let overrides = inputs
        .catalog
        .iter()
        .map(|(layer, path, text)| DataFile {
            path: path.clone(),
            layer: layer.clone(),
            text: text.clone(),
        })
        .collect();
    let facts = HostFacts {
        addresses: inputs.addresses.clone(),
        sshd_ports: inputs.sshd_ports.clone(),
        ..host_facts_formats()
    };
    let mut l = load_with(
        &inputs.main,
        &mut read,
        overrides,
        extra_catalog,
        &facts,
        Some(inputs.discovery.clone().unwrap_or_default()),
    )?;
    l.inputs.names = inputs.names.clone();
    Ok(l)
}

/// The one loader behind [`load_policy`] and [`load_inputs`]: `read`
/// gives policy files, `overrides` the operator's catalog files,
/// `discovered` what the PBX held (`None`: read it now).
fn load_with(
    main: &str,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
    overrides: Vec<DataFile>,
    extra_catalog: &[PathBuf],
    facts: &HostFacts,
    discovered: Option<voipwall_discover::Discovery>,
) -> anyhow::Result<Loaded> {
    let catalog_files: Vec<(String, String, String)> = overrides
        .iter()
        .map(|f| (f.layer.clone(), f.path.clone(), f.text.clone()))
        .collect();
    let (catalog, _) = catalog_with(overrides, extra_catalog)?;
    let mut files = BTreeMap::new();
    let mut recording = |p: &str| {
        let r = read(p);
        if let Ok(t) = &r {
            files.insert(p.to_string(), t.clone());
        }
        r
    };
    let loaded = load(main, &mut recording, &catalog, facts);
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
    let (discovery, found) = match discovered {
        None => discover_into(&mut policy),
        Some(d) => {
            let mut out = voipwall_discover::apply(&mut policy, &d);
            out.extend(d.notes.iter().map(|n| format!("note: {n}")));
            (out, d)
        }
    };
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
    let inputs = Inputs {
        version: VERSION.to_string(),
        main: main.to_string(),
        files,
        catalog: catalog_files,
        addresses: facts.addresses.clone(),
        sshd_ports: facts.sshd_ports.clone(),
        discovery: policy.discover.enabled.then(|| {
            let mut d = found.clone();
            d.secrets.clear();
            d
        }),
        names: BTreeMap::new(),
    };
    Ok(Loaded {
        policy,
        warnings: loaded.diagnostics,
        sources: loaded.sources,
        discovery,
        found,
        inputs,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 25, item 18: what a generation stores is enough to compile it
    /// again once the policy, its include and the PBX's configuration are
    /// gone from disk (secrets are not among it).
    #[test]
    fn stored_inputs_compile_to_the_same_script_without_any_file() {
        let dir = std::env::temp_dir().join(format!(
            "voipwall-inputs-{}-{}",
            std::process::id(),
            crate::clock::now_us()
        ));
        let pbx = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../voipwall-discover/tests/configs/asterisk"
        );
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            std::process::Command::new("cp")
                .args(["-r", pbx])
                .arg(dir.join("pbx"))
                .status()
                .unwrap()
                .success()
        );
        let main = dir.join("policy.toml");
        std::fs::write(
            &main,
            format!(
                "include = [\"more.toml\"]\n\n[discover]\nenabled = true\nasterisk = \"{}/pbx/etc/asterisk\"\nfreeswitch = \"{0}/none\"\nkamailio = \"{0}/none\"\nsshd_config = \"{0}/none\"\n\n[zones.internet]\nservices = [\"sip\"]\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("more.toml"),
            "[networks]\n\"198.51.100.0/24\" = \"trusted\"\n\n[zones.trusted]\nservices = [\"ssh\"]\n",
        )
        .unwrap();
        let facts = HostFacts {
            addresses: vec!["192.0.2.1".parse().unwrap()],
            sshd_ports: Some(vec![22]),
            ..host_facts_formats()
        };
        let l = load_policy(&main, &[], &facts).unwrap();
        assert_eq!(l.inputs.files.len(), 2, "{:?}", l.inputs.files.keys());
        let d = l.inputs.discovery.as_ref().expect("discovery kept");
        assert!(!d.peers.is_empty());
        assert!(d.secrets.is_empty(), "secrets must not be stored");
        let names: BTreeMap<String, Vec<IpAddr>> = l
            .policy
            .hostnames()
            .into_iter()
            .map(|h| (h, vec!["203.0.113.9".parse().unwrap()]))
            .collect();
        assert!(!names.is_empty(), "the PBX's trunk names");
        let first = voipwall_nft::render(&compile_resolved(&l.policy, names.clone()));
        let stored = serde_json::to_string(&Inputs {
            names,
            ..l.inputs.clone()
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let inputs: Inputs = serde_json::from_str(&stored).unwrap();
        let again = load_inputs(&inputs, &[]).unwrap();
        let second = voipwall_nft::render(&compile_resolved(&again.policy, inputs.names.clone()));
        assert_eq!(first, second);
        assert!(second.contains("198.51.100.0/24") && second.contains("5070"));
    }
}
