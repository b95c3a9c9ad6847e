//! Embeds every file under `data/rules` in the library.
include!("../../build-support/embed.rs");

fn main() {
    embed_data(&["rules"], "builtin_rules.rs", "BUILTIN_RULES", "pub");
    embed_data(&["call"], "builtin_call.rs", "BUILTIN_CALL_LISTS", "pub");
}
