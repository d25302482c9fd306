//! How the revision table is laid out in one sled tree: key prefixes ("tables") and encodings.
//!
//! | prefix | key                                   | value                         |
//! |--------|---------------------------------------|-------------------------------|
//! | `r`    | main(8) sub(8)                        | row: mvccpb.KeyValue (history)|
//! | `L`    | lease id(8)                           | granted TTL (8)               |
//! | `K`    | lease id(8) key                       | empty: keys attached to lease |
//! | `m`    | name                                  | meta value (8-byte integers)  |
//!
//! Integers are big-endian so byte order is numeric order. A row with `version == 0` is a
//! tombstone (the key was deleted at that revision). Which row of a key is visible at a revision
//! is answered by the key index in memory (`index.rs`), rebuilt from the rows at start; a write
//! adds one row. Keeping all tables in one tree makes every command one atomic sled batch.
//!
//! Older raftkine versions also kept a key index (`k`) and a table of latest values (`l`) here,
//! and the revision and applied index under two meta names; such a table is converted when it
//! is opened or received in a snapshot.

pub const ROW: u8 = b'r';
pub const LEASE: u8 = b'L';
pub const LEASE_KEY: u8 = b'K';
pub const META: u8 = b'm';
/// Prefixes of the older layout's key index and live table (removed when found).
pub const OLD_INDEX: u8 = b'k';
pub const OLD_LIVE: u8 = b'l';

/// The applied raft index and the store revision, in one entry so that one insert moves both
/// (see `apply.rs`, `Store::commit_batch`).
pub const META_STATE: &[u8] = b"mstate";
pub const META_COMPACT: &[u8] = b"mcompact";
/// Where an older layout kept the revision and the applied index apart.
pub const OLD_META_REVISION: &[u8] = b"mrevision";
pub const OLD_META_APPLIED: &[u8] = b"mapplied";

/// The value of [`META_STATE`]: applied index (8) and revision (8).
pub fn encode_state(applied: u64, revision: i64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&applied.to_be_bytes());
    b[8..].copy_from_slice(&revision.to_be_bytes());
    b
}

pub fn decode_state(b: &[u8]) -> Option<(u64, i64)> {
    if b.len() != 16 {
        return None;
    }
    Some((
        u64::from_be_bytes(b[..8].try_into().ok()?),
        i64::from_be_bytes(b[8..].try_into().ok()?),
    ))
}

/// A (main, sub) revision: main is the store revision of a transaction, sub the write's index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub fn new(main: i64, sub: i64) -> Rev {
        Rev { main, sub }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Rev> {
        if b.len() != 16 {
            return None;
        }
        let main = u64::from_be_bytes(b[..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(b[8..].try_into().ok()?) as i64;
        Some(Rev { main, sub })
    }
}

pub fn row_key(rev: Rev) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(ROW);
    k.extend_from_slice(&rev.to_bytes());
    k
}

pub fn lease_key(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LEASE);
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k
}

pub fn lease_attachment_prefix(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LEASE_KEY);
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k
}

pub fn lease_attachment_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = lease_attachment_prefix(id);
    k.extend_from_slice(key);
    k
}

pub fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn decode_i64(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

/// The smallest byte string greater than every string that starts with `prefix`
/// (None when there is none: the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_skips_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
