//! Random bytes for ids, nonces and jitter: the OS's (`/dev/urandom`), or, where it cannot be
//! read, the hasher's per-process random keys mixed with the time and the pid.

use std::hash::{BuildHasher, Hasher};
use std::io::Read;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        for chunk in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(jiff::Timestamp::now().as_nanosecond().unsigned_abs());
            hasher.write_u32(std::process::id());
            let word = hasher.finish().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
    bytes
}

/// A random number.
pub fn u64() -> u64 {
    u64::from_le_bytes(bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ() {
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
        assert_ne!(super::u64(), super::u64());
    }
}
