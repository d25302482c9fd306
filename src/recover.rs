//! Quorum recovery on a stopped member (etcd's `--force-new-cluster`, dqlite's `.reconfigure`):
//! when a majority of the voters is gone for good, the survivors' storage dirs are rewritten
//! to a membership of the survivors, after which they elect a leader among themselves and the
//! cluster serves again; other nodes then join as usual.
//!
//! Refused while a quorum of the old voters is reachable (recovery would split the cluster).
//! What was committed survives; entries the old majority never committed may be lost.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raft::prelude::ConfState;

use crate::dqlite::files::{self, NodeInfo};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::membership::find_member;
use crate::peer::{connect, url_to_addr};
use crate::proto::etcdserverpb::Member;
use crate::raft::LogStore;
use crate::store::Store;

/// The membership after recovery.
#[derive(Debug)]
pub struct Plan {
    pub voters: Vec<Member>,
    pub standbys: Vec<Member>,
    pub removed: Vec<Member>,
}

impl Plan {
    /// What recovery does, one line per member.
    pub fn describe(&self) -> String {
        let line = |what: &str, m: &Member| {
            format!(
                "  {what:<8} {:016x} {} {}\n",
                m.id,
                m.name,
                m.peer_ur_ls
                    .first()
                    .map(|u| url_to_addr(u))
                    .unwrap_or_default()
            )
        };
        let mut out = String::from("new membership:\n");
        for m in &self.voters {
            out.push_str(&line("voter", m));
        }
        for m in &self.standbys {
            out.push_str(&line("standby", m));
        }
        for m in &self.removed {
            out.push_str(&line("removed", m));
        }
        out
    }
}

/// `raftkine recover --storage-dir DIR [--voters ...]`: the voters are the members named by
/// `voters` (ids, names or peer addresses; this member when empty); every other member is
/// removed. Returns the plan (and does nothing else when `dry_run`).
pub async fn recover(dir: &Path, voters: &[String], dry_run: bool) -> Result<Plan> {
    run(dir, dry_run, |members, me| {
        let mut chosen = vec![me];
        for selector in voters {
            let m = find_member(members, selector).ok_or_else(|| {
                Error::Config(format!("{selector:?} is not a member of this cluster"))
            })?;
            if !chosen.contains(&m.id) {
                chosen.push(m.id);
            }
        }
        Ok((chosen, vec![]))
    })
    .await
}

/// dqlite's `.reconfigure DIR CLUSTER.yaml`: the nodes of the YAML (go-dqlite's NodeInfo list)
/// with role 0 become the voters, the others standbys; members not listed are removed. Nodes
/// are matched by ID, or by address.
pub async fn reconfigure_from_cluster_yaml(dir: &Path, file: &Path) -> Result<Plan> {
    let nodes: Vec<NodeInfo> = files::read_path(file)?;
    let plan = run(dir, false, |members, me| {
        let mut voters = vec![];
        let mut standbys = vec![];
        for node in &nodes {
            let m = members
                .iter()
                .find(|m| m.id == node.id)
                .or_else(|| find_member(members, &node.address))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "node {:x} at {} is not a member of this cluster",
                        node.id, node.address
                    ))
                })?;
            if node.role == files::ROLE_VOTER {
                voters.push(m.id);
            } else {
                standbys.push(m.id);
            }
        }
        if !voters.contains(&me) {
            return Err(Error::Config(
                "this node must be a voter (Role: 0) of the new membership".into(),
            ));
        }
        Ok((voters, standbys))
    })
    .await?;
    Ok(plan)
}

async fn run(
    dir: &Path,
    dry_run: bool,
    choose: impl FnOnce(&[Member], u64) -> Result<(Vec<u64>, Vec<u64>)>,
) -> Result<Plan> {
    let store = Store::open(dir).map_err(|e| {
        Error::Config(format!(
            "{}: {e} (stop raftkine on this node first)",
            dir.display()
        ))
    })?;
    let identity = Identity::load(store.db(), dir)?
        .ok_or_else(|| Error::Config(format!("{} holds no raftkine member", dir.display())))?;
    let log = LogStore::open(store.db(), &crate::raft::wal_dir(dir), identity.log_start())?;
    let members = store.members()?;
    let old = log.conf_state();
    refuse_if_quorum_reachable(&identity, &members, &old).await?;

    let (voter_ids, standby_ids) = choose(&members, identity.member_id)?;
    let pick = |ids: &[u64], learner: bool| -> Vec<Member> {
        ids.iter()
            .map(|id| {
                let mut m = members
                    .iter()
                    .find(|m| m.id == *id)
                    .cloned()
                    .unwrap_or(Member {
                        id: *id,
                        ..Default::default()
                    });
                m.is_learner = learner;
                m
            })
            .collect()
    };
    let plan = Plan {
        voters: pick(&voter_ids, false),
        standbys: pick(&standby_ids, true),
        removed: members
            .iter()
            .filter(|m| !voter_ids.contains(&m.id) && !standby_ids.contains(&m.id))
            .cloned()
            .collect(),
    };
    if dry_run {
        return Ok(plan);
    }
    let mut records = plan.voters.clone();
    records.extend(plan.standbys.iter().cloned());
    store.recover_members(&records)?;
    let mut cs = ConfState::default();
    cs.set_voters(voter_ids);
    cs.set_learners(standby_ids);
    log.set_conf_state(&cs)?;
    store.flush()?;
    tracing::info!("membership rewritten: {plan:?}");
    Ok(plan)
}

/// A member counts as reachable when its peer port completes a TLS handshake with this
/// member's certificate.
async fn refuse_if_quorum_reachable(
    identity: &Identity,
    members: &[Member],
    old: &ConfState,
) -> Result<()> {
    let tls = Arc::new(crate::tls::peer_client_config(&identity.peer)?);
    let mut reachable = vec![];
    for id in old.voters.iter().filter(|id| **id != identity.member_id) {
        let Some(url) = members
            .iter()
            .find(|m| m.id == *id)
            .and_then(|m| m.peer_ur_ls.first())
        else {
            continue;
        };
        let addr = url_to_addr(url);
        let answered =
            tokio::time::timeout(Duration::from_secs(2), connect::channel(&addr, tls.clone()))
                .await;
        if matches!(answered, Ok(Ok(_))) {
            reachable.push(addr);
        }
    }
    // This member counts too (as a voter): it is only stopped.
    let quorum = old.voters.len() / 2 + 1;
    let alive = reachable.len() + usize::from(old.voters.contains(&identity.member_id));
    if alive >= quorum {
        return Err(Error::Config(format!(
            "refusing to recover: a quorum of the voters is reachable ({} and this node); \
             start this node again instead",
            reachable.join(", ")
        )));
    }
    Ok(())
}
