//! How the revision table is laid out in one sled tree: key prefixes ("tables") and encodings.
//!
//! | prefix | key                                   | value                         |
//! |--------|---------------------------------------|-------------------------------|
//! | `r`    | main(8) sub(8)                        | row: mvccpb.KeyValue (history)|
//! | `o`    | main(8) sub(8) of a group's last row  | the group's row owners        |
//! | `L`    | lease id(8)                           | granted TTL (8)               |
//! | `K`    | lease id(8) key                       | empty: keys attached to lease |
//! | `m`    | name                                  | meta value (8-byte integers)  |
//!
//! Integers are big-endian so byte order is numeric order. A row with `version == 0` is a
//! tombstone (the key was deleted at that revision). Which row of a key is visible at a revision
//! is answered by the key index in memory (`index.rs`); a write adds one row.
//!
//! Every row has an owner: its key and whether it is a tombstone. The owners of the rows one
//! commit writes go in one entry, under the commit's last row revision (so entries cover
//! disjoint, ordered revision ranges, and the entry holding a revision is the first at or after
//! it). The key index is rebuilt at start from the owners alone, so a restart reads a few bytes
//! per row instead of every value (which also filled sled's cache with them), and compaction
//! learns which keys it touches the same way. One entry per commit keeps the cost of a put at
//! one more sled insert per group of puts, not per put.
//!
//! The owners are known to match the rows when [`META_OWNERS_STATE`] equals [`META_STATE`]:
//! every commit writes both, so a table written by a raftkine that does not keep owners (an
//! older version, or a snapshot from one) shows a difference, and the owners are rebuilt from
//! the rows. Keeping all tables in one tree makes every command one atomic sled batch.
//!
//! Older raftkine versions also kept a key index (`k`) and a table of latest values (`l`) here,
//! and the revision and applied index under two meta names; such a table is converted when it
//! is opened or received in a snapshot.

pub const ROW: u8 = b'r';
pub const ROW_OWNER: u8 = b'o';
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
/// The [`META_STATE`] value as of the last commit that kept the row owners up to date.
pub const META_OWNERS_STATE: &[u8] = b"mowners";
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
    revision_key(ROW, rev)
}

/// Where the owners of a group of rows are kept: under the group's last revision.
pub fn owners_key(last: Rev) -> Vec<u8> {
    revision_key(ROW_OWNER, last)
}

fn revision_key(table: u8, rev: Rev) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(table);
    k.extend_from_slice(&rev.to_bytes());
    k
}

/// The owner of one row: its revision, its key, and whether it is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub rev: Rev,
    pub key: Vec<u8>,
    pub tombstone: bool,
}

/// An owners entry's value: per row, in revision order, rev(16) tombstone(1) key length(4) key.
pub fn encode_owners(owners: &[Owner]) -> Vec<u8> {
    let size = owners.iter().map(|o| 21 + o.key.len()).sum();
    let mut v = Vec::with_capacity(size);
    for o in owners {
        v.extend_from_slice(&o.rev.to_bytes());
        v.push(u8::from(o.tombstone));
        v.extend_from_slice(&(o.key.len() as u32).to_be_bytes());
        v.extend_from_slice(&o.key);
    }
    v
}

/// The owners in an owners entry's value (None if it is malformed).
pub fn decode_owners(mut v: &[u8]) -> Option<Vec<Owner>> {
    let mut out = vec![];
    while !v.is_empty() {
        let (head, rest) = v.split_at_checked(21)?;
        let rev = Rev::from_bytes(&head[..16])?;
        let tombstone = match head[16] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let len = u32::from_be_bytes(head[17..21].try_into().ok()?) as usize;
        let (key, rest) = rest.split_at_checked(len)?;
        out.push(Owner {
            rev,
            key: key.to_vec(),
            tombstone,
        });
        v = rest;
    }
    Some(out)
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
    fn owners_round_trip_and_reject_malformed_values() {
        let owners = vec![
            Owner {
                rev: Rev::new(7, 0),
                key: b"a".to_vec(),
                tombstone: false,
            },
            Owner {
                rev: Rev::new(7, 1),
                key: vec![],
                tombstone: true,
            },
        ];
        let encoded = encode_owners(&owners);
        assert_eq!(decode_owners(&encoded), Some(owners));
        assert_eq!(decode_owners(&encoded[..encoded.len() - 1]), None);
        let mut bad_flag = encoded.clone();
        bad_flag[16] = 2;
        assert_eq!(decode_owners(&bad_flag), None);
        assert_eq!(decode_owners(&[]), Some(vec![]));
    }

    #[test]
    fn prefix_end_skips_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
