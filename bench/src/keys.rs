//! Keys and values as etcd's benchmark makes them: a key is `--key-size` bytes holding the Go
//! varint of its index (zero padded), the index being sequential or random within
//! `--key-space-size`; a value is `--val-size` random bytes.

use rand::{Rng, RngCore};

/// Generates the key of request `seq`.
#[derive(Clone, Debug)]
pub struct KeyGen {
    size: usize,
    space: u64,
    sequential: bool,
}

impl KeyGen {
    pub fn new(size: usize, space: u64, sequential: bool) -> Self {
        Self {
            size,
            space: space.max(1),
            sequential,
        }
    }

    /// The key of request `seq` (random keys draw from `rng`).
    pub fn key(&self, seq: u64, rng: &mut impl Rng) -> Vec<u8> {
        let index = if self.sequential {
            seq
        } else {
            rng.gen_range(0..self.space)
        };
        self.key_of(index)
    }

    /// The key with index `index` modulo the key space.
    pub fn key_of(&self, index: u64) -> Vec<u8> {
        let mut key = put_varint((index % self.space) as i64);
        if key.len() < self.size {
            key.resize(self.size, 0);
        }
        key
    }
}

/// Go's `binary.PutVarint`: zig-zag, then 7 bits per byte, low first.
fn put_varint(x: i64) -> Vec<u8> {
    let mut ux = (x as u64) << 1;
    if x < 0 {
        ux = !ux;
    }
    let mut out = Vec::with_capacity(10);
    while ux >= 0x80 {
        out.push((ux as u8) | 0x80);
        ux >>= 7;
    }
    out.push(ux as u8);
    out
}

/// `size` random bytes.
pub fn random_value(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_matches_go() {
        assert_eq!(put_varint(0), vec![0]);
        assert_eq!(put_varint(1), vec![2]);
        assert_eq!(put_varint(64), vec![0x80, 0x01]);
        assert_eq!(
            KeyGen::new(8, 10, true).key_of(3),
            vec![6, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
