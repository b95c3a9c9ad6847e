//! Any bytes as a policy: loading never panics, and whatever loads without
//! errors compiles, renders and explains without panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use voipwall_nft::{CompileInput, NoDynamic, Packet, compile, explain, render};
use voipwall_policy::{Catalog, DataFile, HostFacts, Proto, SourceMap, load, render_all};

fn catalog() -> &'static Catalog {
    static CAT: OnceLock<Catalog> = OnceLock::new();
    CAT.get_or_init(|| Catalog::load(&DataFile::builtin(), &mut SourceMap::default()).0)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let loaded = load("fuzz.toml", &mut |_| Ok(text.clone()), catalog(), &HostFacts::default());
    let _ = render_all(&loaded.diagnostics, &loaded.sources);
    if let Some(policy) = loaded.policy {
        let rs = compile(&policy, &CompileInput::default());
        let _ = render(&rs);
        let p = Packet { src: "203.0.113.9".parse().unwrap(), iif: "eth0".into(), proto: Proto::Udp, dport: 5060, established: false };
        let _ = explain(&rs, &p, &NoDynamic);
    }
});
