//! Cluster membership as an operator sees it: join tokens (`raftkine add-node`), admitting a
//! joining node as a learner, joining from the new node's side (`raftkine join`), and removing
//! members. Every change goes through raft; promotion of caught-up learners is automatic (see
//! the raft thread's housekeeping).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::command::Op;
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::node::Node;
use crate::peer::{connect, url_to_addr};
use crate::proto::etcdserverpb::Member;
use crate::proto::raftkinepb::{
    member_change::Kind, peer_client::PeerClient, AddNodeResponse, JoinRequest, JoinResponse,
    JoinToken, MemberChange,
};
use crate::tls::{hex, issue_member_cert, join_client_config, PeerIdentity};

/// Length (hex digits) of the secret and of the CA fingerprint in a token.
const SECRET_HEX: usize = 32;
const FINGERPRINT_HEX: usize = 32;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Mints a one-time join token valid for `ttl`; the answer holds the `ADDR/TOKEN` to give to
/// `raftkine join`.
pub async fn create_join_token(node: &Node, ttl: Duration) -> Result<AddNodeResponse> {
    let secret = hex(&rand::random::<[u8; SECRET_HEX / 2]>());
    let expires_unix = now_unix() + ttl.as_secs() as i64;
    node.propose(Op::AddJoinToken(JoinToken {
        token_hash: token_hash(&secret),
        expires_unix,
    }))
    .await?;
    let fingerprint = node.identity.peer.ca_fingerprint()?;
    let addr = url_to_addr(&node.config.peer_url());
    Ok(AddNodeResponse {
        join: format!("{addr}/{secret}{}", &fingerprint[..FINGERPRINT_HEX]),
        expires_unix,
    })
}

/// Admits a joining node: uses its token up, adds it as a learner, and returns its identity.
///
/// `holds_cluster_certificate`: the joiner presented a certificate of the cluster CA (a
/// MicroK8s node given the shared `cluster.crt`); it needs no token, and a member it replaces
/// (same peer address: the node was reset and joins again) is removed first.
pub async fn admit(
    node: &Node,
    req: JoinRequest,
    holds_cluster_certificate: bool,
) -> Result<JoinResponse> {
    if holds_cluster_certificate {
        let wanted = url_to_addr(&req.peer_url);
        let stale = node.store.members()?.into_iter().find(|m| {
            m.id != node.member_id && m.peer_ur_ls.iter().any(|u| url_to_addr(u) == wanted)
        });
        // A learner at that address (added by MemberAdd, or a standby that was reset): the
        // node takes its place. A learner never voted, so its lost log is no safety concern.
        if let Some(learner) = stale.as_ref().filter(|m| m.is_learner) {
            tracing::info!(member = learner.id, peer = %wanted, "a node takes the place of the learner at its address");
            return identity_answer(node, learner.id, &req.name);
        }
        if let Some(stale) = stale {
            tracing::info!(member = stale.id, peer = %wanted, "a node joins again at the address of a member: removing the old member");
            remove_member(node, stale).await?;
        }
    } else {
        if req.token.len() != SECRET_HEX {
            return Err(Error::InvalidArgument("malformed join token".into()));
        }
        node.propose(Op::ConsumeJoinToken(JoinToken {
            token_hash: token_hash(&req.token),
            expires_unix: now_unix(),
        }))
        .await?;
    }
    let member_id = loop {
        let id = rand::random::<u64>() | 1;
        if node.store.member(id)?.is_none() {
            break id;
        }
    };
    let name = if req.name.is_empty() {
        format!("{member_id:016x}")
    } else {
        req.name.clone()
    };
    let member = Member {
        id: member_id,
        name: name.clone(),
        peer_ur_ls: vec![req.peer_url.clone()],
        client_ur_ls: req.client_urls.clone(),
        is_learner: true,
    };
    tracing::info!(member = member_id, peer = %req.peer_url, "admitting a new member as learner");
    node.change_members(MemberChange {
        kind: Kind::AddLearner as i32,
        member: Some(member),
        proposer: 0,
        request_id: 0,
    })
    .await?;
    identity_answer(node, member_id, &name)
}

/// What a joining node needs: its id, the cluster CA and a certificate, and the members.
fn identity_answer(node: &Node, member_id: u64, name: &str) -> Result<JoinResponse> {
    let peer = &node.identity.peer;
    let name = if name.is_empty() {
        format!("{member_id:016x}")
    } else {
        name.to_string()
    };
    let (member_cert, member_key) = issue_member_cert(&peer.ca_cert, &peer.ca_key, &name)?;
    // The joiner reaches the cluster through the members it is told about; this member's own
    // record may not be applied yet (a first node publishes it shortly after it starts), so it
    // is always included as it is now.
    let me = node.self_member();
    let mut members: Vec<Member> = node
        .store
        .members()?
        .into_iter()
        .filter(|m| m.id != me.id)
        .collect();
    members.push(me);
    Ok(JoinResponse {
        cluster_id: node.cluster_id,
        member_id,
        ca_cert: peer.ca_cert.clone(),
        member_cert,
        member_key,
        members,
        ca_key: peer.ca_key.clone(),
    })
}

/// etcd's MemberAdd: records a member at `peer_urls` before it runs. It joins as a learner and
/// is promoted automatically once caught up (raftkine never adds a voter that has no log yet,
/// even when asked for one). The new node starts with `--initial-cluster-state existing` and
/// the cluster's shared CA in its storage dir; it then takes this member's id (see [`admit`]).
pub async fn add_member(node: &Node, peer_urls: &[String]) -> Result<Member> {
    if peer_urls.is_empty() {
        return Err(Error::InvalidArgument(
            "member peer URLs are not provided".into(),
        ));
    }
    let wanted: Vec<String> = peer_urls.iter().map(|u| url_to_addr(u)).collect();
    let taken = node.store.members()?.into_iter().any(|m| {
        m.peer_ur_ls
            .iter()
            .any(|u| wanted.contains(&url_to_addr(u)))
    });
    if taken {
        return Err(Error::PeerUrlExists);
    }
    let id = loop {
        let id = rand::random::<u64>() | 1;
        if node.store.member(id)?.is_none() {
            break id;
        }
    };
    let member = Member {
        id,
        name: String::new(),
        peer_ur_ls: wanted.iter().map(|a| format!("https://{a}")).collect(),
        client_ur_ls: vec![],
        is_learner: true,
    };
    tracing::info!(member = id, peer = ?member.peer_ur_ls, "MemberAdd: a learner waits for its node");
    node.change_members(MemberChange {
        kind: Kind::AddLearner as i32,
        member: Some(member.clone()),
        proposer: 0,
        request_id: 0,
    })
    .await?;
    Ok(member)
}

/// etcd's MemberUpdate: new peer URLs for a member (it publishes its client URLs itself).
pub async fn update_member(node: &Node, id: u64, peer_urls: &[String]) -> Result<()> {
    let mut member = node.store.member(id)?.ok_or(Error::MemberNotFound)?;
    member.peer_ur_ls = peer_urls
        .iter()
        .map(|u| format!("https://{}", url_to_addr(u)))
        .collect();
    node.propose(Op::MemberAttributes(member)).await?;
    Ok(())
}

/// Removes the member named by id (hex or decimal), name or peer address.
pub async fn remove(node: &Node, selector: &str) -> Result<Vec<Member>> {
    let members = node.store.members()?;
    let target = find_member(&members, selector)
        .ok_or(Error::MemberNotFound)?
        .clone();
    remove_member(node, target).await?;
    node.store.members()
}

/// Removes a member; a leader hands leadership over first (raft-rs keeps a removed leader
/// leading otherwise).
pub async fn remove_member(node: &Node, target: Member) -> Result<()> {
    if node.raft_status().leader() == target.id {
        node.step_down().await?;
    }
    node.change_members(MemberChange {
        kind: Kind::Remove as i32,
        member: Some(target),
        proposer: 0,
        request_id: 0,
    })
    .await
}

/// Promotes a learner (etcd's MemberPromote): refused unless it is caught up with the leader.
pub async fn promote(node: &Node, id: u64) -> Result<()> {
    let member = node.store.member(id)?.ok_or(Error::MemberNotFound)?;
    if !member.is_learner {
        return Err(Error::InvalidArgument(
            "can only promote a learner member".into(),
        ));
    }
    let view = node.group_view().await?;
    if let Some(p) = view.progress.iter().find(|p| p.id == id) {
        if p.matched + 64 < view.last_index {
            return Err(Error::InvalidArgument(
                "can only promote a learner member which is in sync with leader".into(),
            ));
        }
    }
    node.change_members(MemberChange {
        kind: Kind::Promote as i32,
        member: Some(member),
        proposer: 0,
        request_id: 0,
    })
    .await
}

/// The member a user means by `selector`.
pub fn find_member<'m>(members: &'m [Member], selector: &str) -> Option<&'m Member> {
    let as_hex = u64::from_str_radix(selector.trim_start_matches("0x"), 16).ok();
    let as_dec = selector.parse::<u64>().ok();
    members.iter().find(|m| {
        Some(m.id) == as_hex
            || Some(m.id) == as_dec
            || m.name == selector
            || m.peer_ur_ls
                .iter()
                .any(|u| u == selector || url_to_addr(u) == selector)
    })
}

/// The parts of `ADDR/TOKEN`: (peer address, secret, CA fingerprint prefix).
pub fn parse_join_arg(arg: &str) -> Result<(String, String, String)> {
    let bad = || {
        Error::Config(format!(
            "{arg:?} is not a join command argument (ADDR/TOKEN, as printed by `raftkine add-node`)"
        ))
    };
    let (addr, token) = arg.rsplit_once('/').ok_or_else(bad)?;
    if token.len() != SECRET_HEX + FINGERPRINT_HEX || !token.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    let (secret, fingerprint) = token.split_at(SECRET_HEX);
    Ok((
        url_to_addr(addr),
        secret.to_string(),
        fingerprint.to_string(),
    ))
}

/// `raftkine join` before serving: presents the token to a member and stores the identity it
/// hands out. Does nothing when the data dir already belongs to a member (a restart).
pub async fn join_cluster(arg: &str, config: &ServeConfig, db: &sled::Db) -> Result<Identity> {
    let dir: &Path = &config.storage_dir;
    if let Some(identity) = Identity::load(db, dir)? {
        tracing::info!(
            "data dir already belongs to member {:x}; not joining again",
            identity.member_id
        );
        return Ok(identity);
    }
    let (addr, secret, fingerprint) = parse_join_arg(arg)?;
    let tls = Arc::new(join_client_config(&fingerprint)?);
    let answer = ask_to_join(&addr, tls, secret, config).await?;
    let peer = PeerIdentity {
        ca_cert: answer.ca_cert.clone(),
        ca_key: answer.ca_key.clone(),
        cert: answer.member_cert.clone(),
        key: answer.member_key.clone(),
    };
    store_joined_identity(answer, peer, db, dir)
}

/// Joins with the cluster certificate every member shares (a k8s-dqlite storage dir's
/// `cluster.crt`/`cluster.key`, as MicroK8s hands them to a joining node), through the first
/// of `cluster` (peer addresses, as in `init.yaml`) that answers. No token: holding the
/// cluster's key is the credential.
pub async fn join_with_certificate(
    cluster: &[String],
    peer: PeerIdentity,
    config: &ServeConfig,
    db: &sled::Db,
) -> Result<Identity> {
    let tls = Arc::new(crate::tls::peer_client_config(&peer)?);
    let mut failures = vec![];
    for addr in cluster {
        let addr = url_to_addr(addr);
        match ask_to_join(&addr, tls.clone(), String::new(), config).await {
            Ok(answer) => return store_joined_identity(answer, peer, db, &config.storage_dir),
            Err(e) => {
                tracing::warn!("joining through {addr}: {e}");
                failures.push(e.to_string());
            }
        }
    }
    Err(Error::Config(format!(
        "no member of {cluster:?} admitted this node: {}",
        failures.join("; ")
    )))
}

/// etcd's way in: `--initial-cluster-state existing --initial-cluster NAME=URL,...` on a new
/// storage dir holding the cluster's CA, after a MemberAdd of this node's peer URL.
pub async fn join_existing(config: &ServeConfig, db: &sled::Db) -> Result<Identity> {
    let dir: &Path = &config.storage_dir;
    let peer = match PeerIdentity::from_cluster_files(dir, &config.name)? {
        Some(p) => p,
        None => PeerIdentity::load_user_ca(dir, &config.name)?.ok_or_else(|| {
            Error::Config(format!(
                "--initial-cluster-state existing joins with the cluster's CA: put its ca.crt \
                 and ca.key in {}/peer/ (or cluster.crt and cluster.key in {})",
                dir.display(),
                dir.display()
            ))
        })?,
    };
    let me = url_to_addr(&config.peer_url());
    let others: Vec<String> = config
        .initial_cluster
        .iter()
        .filter_map(|entry| entry.split_once('=').map(|(_, url)| url_to_addr(url)))
        .filter(|addr| *addr != me)
        .collect();
    if others.is_empty() {
        return Err(Error::Config(
            "--initial-cluster-state existing needs --initial-cluster NAME=PEER_URL,... naming \
             the running members"
                .into(),
        ));
    }
    join_with_certificate(&others, peer, config, db).await
}

async fn ask_to_join(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    token: String,
    config: &ServeConfig,
) -> Result<JoinResponse> {
    let channel = connect::channel(addr, tls).await?;
    let client_urls = crate::api::cluster::client_urls_of(config);
    let answer = PeerClient::new(channel)
        .join(JoinRequest {
            token,
            name: config.name.clone(),
            peer_url: config.peer_url(),
            client_urls,
        })
        .await
        .map_err(|s| Error::Config(format!("joining through {addr}: {}", s.message())))?
        .into_inner();
    Ok(answer)
}

fn store_joined_identity(
    answer: JoinResponse,
    peer: PeerIdentity,
    db: &sled::Db,
    dir: &Path,
) -> Result<Identity> {
    let seed_peers = answer
        .members
        .iter()
        .filter(|m| m.id != answer.member_id)
        .filter_map(|m| Some((m.id, url_to_addr(m.peer_ur_ls.first()?))))
        .collect();
    let identity = Identity {
        cluster_id: answer.cluster_id,
        member_id: answer.member_id,
        joined: true,
        seed_peers,
        peer,
    };
    identity.save(db, dir)?;
    tracing::info!(
        member = answer.member_id,
        "joined cluster {:x} as a learner",
        answer.cluster_id
    );
    Ok(identity)
}
