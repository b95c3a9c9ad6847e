//! Embeds every file under `data/services` and `data/presets` in the binary.
include!("../../build-support/embed.rs");

fn main() {
    embed_data(
        &["services", "presets"],
        "builtin_data.rs",
        "BUILTIN_DATA",
        "pub(crate)",
    );
}
