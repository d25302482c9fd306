//! The snapshot file: a bbolt database followed by the SHA-256 of the database, as etcd's
//! Maintenance.Snapshot streams it and `etcdctl snapshot save` stores it. etcd tells a file with
//! the trailer by its size: a database is whole pages, so its size is a multiple of 512 and a
//! file with the trailer is 32 bytes more.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Length of the trailer (a SHA-256).
pub const TRAILER_LEN: usize = 32;

/// The file for database bytes: the database, then its SHA-256.
pub fn seal(mut db: Vec<u8>) -> Vec<u8> {
    let digest = Sha256::digest(&db);
    db.extend_from_slice(&digest);
    db
}

/// Whether a file of this size carries the trailer (etcd's rule).
pub fn has_trailer(len: usize) -> bool {
    len % 512 == TRAILER_LEN
}

/// The database inside a snapshot file, after checking the trailer. A file without one (a bare
/// database file) is accepted only with `skip_hash_check`, as `etcdctl snapshot restore` does.
pub fn open(file: &[u8], skip_hash_check: bool) -> Result<&[u8]> {
    if !has_trailer(file.len()) {
        if skip_hash_check {
            return Ok(file);
        }
        return Err(Error::MissingChecksum);
    }
    let (db, trailer) = file.split_at(file.len() - TRAILER_LEN);
    if !skip_hash_check {
        let actual = Sha256::digest(db);
        if actual.as_slice() != trailer {
            return Err(Error::ChecksumMismatch {
                expected: hex(trailer),
                actual: hex(&actual),
            });
        }
    }
    Ok(db)
}

/// Lowercase hex, as sha256sum prints digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_open_and_damage_is_found() {
        let db = vec![5u8; 4096 * 3];
        let file = seal(db.clone());
        assert_eq!(file.len(), db.len() + TRAILER_LEN);
        assert_eq!(open(&file, false).expect("opens"), &db[..]);
        let mut damaged = file.clone();
        damaged[100] ^= 1;
        assert!(matches!(
            open(&damaged, false),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert_eq!(open(&damaged, true).expect("skipped").len(), db.len());
        assert!(matches!(open(&db, false), Err(Error::MissingChecksum)));
        assert_eq!(open(&db, true).expect("bare db"), &db[..]);
    }
}
