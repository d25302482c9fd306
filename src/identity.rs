//! Who this member is: cluster id, member id, how its raft log began, and its peer certificate.
//! Made once (bootstrapping a new cluster, or by `raftkine join`) and kept in the data dir.

use std::path::Path;

use crate::error::Result;
use crate::raft::LogStart;
use crate::tls::PeerIdentity;

const TREE: &str = "identity";

/// This member's identity.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Joined an existing cluster (its log starts empty) rather than bootstrapping one.
    pub joined: bool,
    pub peer: PeerIdentity,
    /// Members known when joining (id, peer address): how a new member reaches the cluster
    /// before the replicated member list arrives with the first snapshot.
    pub seed_peers: Vec<(u64, String)>,
}

fn read_u64(tree: &sled::Tree, name: &str) -> Result<Option<u64>> {
    Ok(tree
        .get(name)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
}

impl Identity {
    /// The identity stored in the data dir, if any.
    pub fn load(db: &sled::Db, dir: &Path) -> Result<Option<Identity>> {
        let tree = db.open_tree(TREE)?;
        let (Some(cluster_id), Some(member_id)) = (
            read_u64(&tree, "cluster_id")?,
            read_u64(&tree, "member_id")?,
        ) else {
            return Ok(None);
        };
        let joined = read_u64(&tree, "joined")?.unwrap_or(0) == 1;
        let seed_peers = match tree.get("seed_peers")? {
            Some(v) => decode_seeds(&v),
            None => vec![],
        };
        let from_cluster_files =
            PeerIdentity::from_cluster_files(dir, &format!("{member_id:016x}"))?;
        let peer =
            match from_cluster_files.map_or_else(|| PeerIdentity::load(dir), |p| Ok(Some(p)))? {
                Some(p) => p,
                // A data dir from before peer certificates existed: make them now.
                None => {
                    let p = PeerIdentity::bootstrap(cluster_id, &member_id.to_string())?;
                    p.save(dir)?;
                    p
                }
            };
        Ok(Some(Identity {
            cluster_id,
            member_id,
            joined,
            peer,
            seed_peers,
        }))
    }

    /// A brand-new cluster with this member as its only voter. A k8s-dqlite storage dir's
    /// `cluster.crt`/`cluster.key`, or a CA the operator placed in `<storage-dir>/peer/`
    /// (`ca.crt`, `ca.key`, optionally `member.crt`/`member.key`), is used instead of a
    /// generated CA.
    pub fn bootstrap(db: &sled::Db, dir: &Path, name: &str) -> Result<Identity> {
        let cluster_id = rand::random::<u64>() | 1;
        let member_id = rand::random::<u64>() | 1;
        let provided = match PeerIdentity::from_cluster_files(dir, name)? {
            Some(shared) => Some(shared),
            None => PeerIdentity::load_user_ca(dir, name)?,
        };
        let peer = match provided {
            Some(provided) => provided,
            None => PeerIdentity::bootstrap(cluster_id, name)?,
        };
        let identity = Identity {
            cluster_id,
            member_id,
            joined: false,
            peer,
            seed_peers: vec![],
        };
        identity.save(db, dir)?;
        Ok(identity)
    }

    /// Stores the identity (the certificates first: an identity without them is not saved).
    pub fn save(&self, db: &sled::Db, dir: &Path) -> Result<()> {
        self.peer.save(dir)?;
        let tree = db.open_tree(TREE)?;
        tree.insert("joined", &u64::from(self.joined).to_be_bytes())?;
        tree.insert("seed_peers", encode_seeds(&self.seed_peers).as_bytes())?;
        tree.insert("cluster_id", &self.cluster_id.to_be_bytes())?;
        tree.insert("member_id", &self.member_id.to_be_bytes())?;
        db.flush()?;
        Ok(())
    }

    /// How this member's raft log begins when it does not exist yet.
    pub fn log_start(&self) -> LogStart {
        if self.joined {
            LogStart::Join
        } else {
            LogStart::NewCluster {
                voters: vec![self.member_id],
            }
        }
    }
}

/// Seed peers as lines of `hex-id address`.
fn encode_seeds(seeds: &[(u64, String)]) -> String {
    seeds
        .iter()
        .map(|(id, addr)| format!("{id:x} {addr}\n"))
        .collect()
}

fn decode_seeds(bytes: &[u8]) -> Vec<(u64, String)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| {
            let (id, addr) = line.split_once(' ')?;
            Some((u64::from_str_radix(id, 16).ok()?, addr.to_string()))
        })
        .collect()
}
