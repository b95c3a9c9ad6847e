//! Embeds every file under `data/logformats` in the library.
include!("../../build-support/embed.rs");

fn main() {
    embed_data(
        &["logformats"],
        "builtin_formats.rs",
        "BUILTIN_FORMATS",
        "pub",
    );
}
