//! Discovery over directories of realistic configurations (`tests/configs/<pbx>/etc/...`),
//! loaded into memory under their absolute paths so absolute references in
//! them (`/etc/kamailio/dispatcher.list`) resolve as on a real host.
// A driver (test, example, benchmark): it may read files and the clock;
// the crate's library code may not (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::path::Path;

use voipwall_discover::{Discovery, Roots, discover, weak};

fn load(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            load(&p, root, out);
        } else {
            let key = format!("/{}", p.strip_prefix(root).unwrap().display());
            out.insert(key, std::fs::read_to_string(&p).unwrap());
        }
    }
}

fn fixture(name: &str) -> Discovery {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name);
    let mut files = BTreeMap::new();
    load(&root, &root, &mut files);
    discover(&files, &Roots::default())
}

/// One line per finding, stable, for whole-output comparison.
fn render(d: &Discovery) -> String {
    let mut s = String::new();
    for p in &d.found {
        s += &format!("found {}\n", p.name());
    }
    for l in &d.listeners {
        s += &format!(
            "listen {} {} {} @{}\n",
            l.service, l.driver, l.port, l.origin
        );
    }
    for p in &d.peers {
        let ports: Vec<String> = p.ports.iter().map(ToString::to_string).collect();
        s += &format!(
            "peer {} {} `{}` {}{} -> {} @{}\n",
            p.driver,
            p.role,
            p.name,
            p.host,
            if p.srv { " (srv)" } else { "" },
            ports.join(","),
            p.origin
        );
    }
    if let Some((r, at)) = &d.rtp {
        s += &format!("rtp {r} @{at}\n");
    }
    for (p, at) in &d.ssh_ports {
        s += &format!("ssh {p} @{at}\n");
    }
    for x in &d.secrets {
        let w: Vec<&str> = weak::check(&x.secret, &x.user)
            .iter()
            .map(|w| w.describe())
            .collect();
        s += &format!(
            "secret {} `{}` user {} @{}: {}\n",
            x.driver,
            x.section,
            x.user,
            x.origin,
            if w.is_empty() {
                "ok".into()
            } else {
                w.join("; ")
            }
        );
    }
    for n in &d.notes {
        s += &format!("note {n}\n");
    }
    s
}

/// Each fixture's findings equal `tests/configs/<name>.expected`, reviewed
/// line by line when written. `VOIPWALL_BLESS=1` rewrites them after a
/// deliberate change (review the diff).
#[test]
fn fixtures_match_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs");
    let mut failed = Vec::new();
    for n in ["freepbx", "asterisk", "freeswitch", "kamailio"] {
        let got = render(&fixture(n));
        let path = dir.join(format!("{n}.expected"));
        if std::env::var_os("VOIPWALL_BLESS").is_some() {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failed.push(format!("== {n}: got\n{got}\n== want\n{want}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn trunks_get_only_their_own_drivers_ports() {
    let d = fixture("freepbx");
    let iax = d.peers.iter().find(|p| p.driver == "iax2").unwrap();
    assert_eq!(iax.ports.len(), 1);
    assert_eq!(iax.ports[0].to_string(), "udp/4569");
    let telco = d.peers.iter().find(|p| p.name == "telco").unwrap();
    assert!(telco.ports.iter().all(|p| p.lo == 5060 || p.lo == 5061));
    let legacy = d.peers.iter().find(|p| p.name == "legacy").unwrap();
    assert_eq!(
        legacy
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["udp/5160"]
    );
}

#[test]
fn service_ports_feed_the_catalog_services() {
    let sp = fixture("freepbx").service_ports();
    let show = |k: &str| {
        sp[k]
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(show("sip"), "tcp/5060,udp/5060");
    assert_eq!(show("sip-tls"), "tcp/5061");
    assert_eq!(show("chan-sip"), "udp/5160");
    assert_eq!(show("iax2"), "udp/4569");
}

/// chan_sip's TLS port beside pjsip lands in service `chan-sip`, which is
/// otherwise plain SIP: applied to a policy, that port is marked TLS, so
/// packet copies skip it and `check` says it needs HEP or a log (found in
/// the review of issue 13's change).
#[test]
fn chan_sip_tls_beside_pjsip_is_marked_tls() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/freepbx");
    let mut files = BTreeMap::new();
    load(&root, &root, &mut files);
    let general = "/etc/asterisk/sip_general_additional.conf";
    let text = files[general].replace("tlsenable=no", "tlsenable=yes\ntlsbindaddr=0.0.0.0:5161");
    files.insert(general.to_string(), text);
    let d = discover(&files, &Roots::default());
    assert_eq!(
        d.tls_ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["tcp/5161"]
    );
    let mut sm = voipwall_policy::SourceMap::default();
    let (catalog, _) =
        voipwall_policy::Catalog::load(&voipwall_policy::DataFile::builtin(), &mut sm);
    let text = "preset = \"freepbx\"\n[interfaces]\neth0 = \"internet\"\n[zones.internet]\nservices = [\"chan-sip\"]\n";
    let loaded = voipwall_policy::load(
        "policy.toml",
        &mut |_| Ok(text.to_string()),
        &catalog,
        &voipwall_policy::HostFacts::default(),
    );
    let mut policy = loaded.policy.expect("loads");
    voipwall_discover::apply(&mut policy, &d);
    let unread: Vec<String> = policy
        .sip_unreadable_ports()
        .iter()
        .map(|(p, s, _)| format!("{p} {s}"))
        .collect();
    assert!(
        unread.contains(&"tcp/5161 chan-sip".to_string()),
        "{unread:?}"
    );
    assert!(
        !policy
            .sip_readable_ports()
            .iter()
            .any(|p| p.to_string() == "tcp/5161"),
        "{:?}",
        policy.sip_readable_ports()
    );
}
