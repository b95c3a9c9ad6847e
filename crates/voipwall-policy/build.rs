//! Embeds every file under `data/services` and `data/presets` in the binary.
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    println!("cargo:rerun-if-changed={}", data.display());
    let mut out = String::from(
        "/// Embedded data files: (path under data/, contents).\npub(crate) const BUILTIN_DATA: &[(&str, &str)] = &[\n",
    );
    for kind in ["services", "presets"] {
        let dir = data.join(kind);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("data directory exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        names.sort();
        for p in names {
            let file = p.file_name().expect("file").to_string_lossy();
            let abs = p.canonicalize().expect("canonical path");
            writeln!(
                out,
                "    ({:?}, include_str!({:?})),",
                format!("{kind}/{file}"),
                abs.display().to_string()
            )
            .expect("write");
        }
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_data.rs");
    std::fs::write(dest, out).expect("write builtin_data.rs");
}
