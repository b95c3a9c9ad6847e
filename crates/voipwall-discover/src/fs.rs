//! The one adapter that touches the disk.

use crate::{Files, glob_match, split_dir};

/// Reads files from the local filesystem. Files larger than 8 MiB are
/// treated as unreadable (a configuration file that big is not one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

const MAX_FILE: u64 = 8 << 20;

// The crate's one sanctioned I/O: everything else reads through `Files`.
#[allow(clippy::disallowed_methods)]
impl Files for Disk {
    fn read(&self, path: &str) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn glob(&self, pattern: &str) -> Vec<String> {
        let (dir, pat) = split_dir(pattern);
        let Ok(rd) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| glob_match(pat, n))
            .map(|n| {
                if dir.is_empty() {
                    n
                } else {
                    format!("{dir}/{n}")
                }
            })
            .collect();
        out.sort();
        out
    }
}
