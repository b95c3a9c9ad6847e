//! Embeds every file under `data/logformats` in the library.
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/logformats");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("data/logformats exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    let mut out = String::from(
        "/// Embedded log format files: (path under data/, contents).\npub const BUILTIN_FORMATS: &[(&str, &str)] = &[\n",
    );
    for p in names {
        let file = p.file_name().expect("file").to_string_lossy();
        let abs = p.canonicalize().expect("canonical path");
        writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            format!("logformats/{file}"),
            abs.display().to_string()
        )
        .expect("write");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin_formats.rs");
    std::fs::write(dest, out).expect("write builtin_formats.rs");
}
