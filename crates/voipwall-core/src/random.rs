//! The one random source: the kernel's (`/dev/urandom`). Tokens, dashboard
//! sessions, CSRF tokens, the engine's hash seeds and DNS query ids all
//! come from here, so none is predictable from outside.

use std::io::Read as _;

/// Fills `b` from the kernel's random source.
pub fn fill(b: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

/// `n` random bytes in hex (tokens, session ids): an error rather than
/// anything weaker when the kernel's source cannot be read.
pub fn hex(n: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; n];
    fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A hash seed (the clock and pid as a last resort, which still differ per
/// start: a seed must not stop the daemon).
pub fn seed() -> u64 {
    let mut b = [0u8; 8];
    if fill(&mut b).is_ok() {
        return u64::from_ne_bytes(b);
    }
    (u64::from(crate::clock::subsec_nanos()) << 32)
        ^ crate::clock::now_us()
        ^ u64::from(std::process::id())
}

/// A DNS query id (the clock as a last resort: with the random source port
/// an off-path forger still guesses most of 32 bits).
pub fn query_id() -> u16 {
    let mut b = [0u8; 2];
    if fill(&mut b).is_ok() {
        return u16::from_ne_bytes(b);
    }
    let n = crate::clock::subsec_nanos();
    (n ^ (n >> 16)) as u16
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_seeds_and_tokens_differ_each_time() {
        let ids: std::collections::BTreeSet<u16> = (0..8).map(|_| super::query_id()).collect();
        // Eight random 16-bit ids: a repeat has probability < 0.05 %.
        assert!(ids.len() >= 7, "{ids:?}");
        assert_ne!(super::seed(), super::seed());
        let (a, b) = (super::hex(32).unwrap(), super::hex(32).unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
