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
pub async fn admit(node: &Node, req: JoinRequest) -> Result<JoinResponse> {
    if req.token.len() != SECRET_HEX {
        return Err(Error::InvalidArgument("malformed join token".into()));
    }
    node.propose(Op::ConsumeJoinToken(JoinToken {
        token_hash: token_hash(&req.token),
        expires_unix: now_unix(),
    }))
    .await?;
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
    let peer = &node.identity.peer;
    let (member_cert, member_key) = issue_member_cert(&peer.ca_cert, &peer.ca_key, &name)?;
    let member = Member {
        id: member_id,
        name,
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
    let channel = connect::channel(&addr, tls).await?;
    let client_urls = crate::api::cluster::client_urls_of(config);
    let answer = PeerClient::new(channel)
        .join(JoinRequest {
            token: secret,
            name: config.name.clone(),
            peer_url: config.peer_url(),
            client_urls,
        })
        .await
        .map_err(|s| Error::Config(format!("joining through {addr}: {}", s.message())))?
        .into_inner();
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
        peer: PeerIdentity {
            ca_cert: answer.ca_cert,
            ca_key: answer.ca_key,
            cert: answer.member_cert,
            key: answer.member_key,
        },
    };
    identity.save(db, dir)?;
    tracing::info!(
        member = answer.member_id,
        "joined cluster {:x} as a learner",
        answer.cluster_id
    );
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_arguments_parse() {
        let token = format!("{}{}", "a".repeat(32), "b".repeat(32));
        let (addr, secret, fp) = parse_join_arg(&format!("10.0.0.1:2380/{token}")).expect("parses");
        assert_eq!(addr, "10.0.0.1:2380");
        assert_eq!(secret, "a".repeat(32));
        assert_eq!(fp, "b".repeat(32));
        assert!(parse_join_arg("10.0.0.1:2380/short").is_err());
        assert!(parse_join_arg("no-slash").is_err());
    }

    #[test]
    fn members_are_found_by_id_name_or_address() {
        let members = vec![Member {
            id: 0xabc,
            name: "n1".into(),
            peer_ur_ls: vec!["tcp://10.0.0.1:2380".into()],
            client_ur_ls: vec![],
            is_learner: false,
        }];
        for s in ["abc", "2748", "n1", "10.0.0.1:2380", "tcp://10.0.0.1:2380"] {
            assert!(find_member(&members, s).is_some(), "{s}");
        }
        assert!(find_member(&members, "n2").is_none());
    }
}
