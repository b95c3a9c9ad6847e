// Shared by the build scripts that embed data files (`include!`d, since a
// build script cannot depend on the crate it builds): writes
// `$OUT_DIR/<out>` with `pub(crate) const <name>: &[(&str, &str)]`, one
// `("<kind>/<file>.toml", include_str!(...))` per file under `data/<kind>/`,
// sorted by path.

// Build scripts run at compile time and must read the data directory.
#[allow(clippy::disallowed_methods)]
fn embed_data(kinds: &[&str], out: &str, name: &str, visibility: &str) {
    use std::fmt::Write as _;
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let mut src = format!("/// Embedded data files: (path under data/, contents).\n{visibility} const {name}: &[(&str, &str)] = &[\n");
    for kind in kinds {
        let dir = data.join(kind);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .expect("data directory exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let file = p.file_name().expect("file").to_string_lossy();
            let abs = p.canonicalize().expect("canonical path");
            writeln!(src, "    ({:?}, include_str!({:?})),", format!("{kind}/{file}"), abs.display().to_string())
                .expect("write to a String");
        }
    }
    src.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join(out);
    std::fs::write(dest, src).expect("write the embedded data list");
}
