//! The operator commands of the `raftkine` binary that talk to a running member: `add-node`,
//! `status`, `remove-node`, `leave`, `alarm list|disarm`; [`backup`] has `backup` and
//! `restore`. (`serve` and `join` run a member; see main.rs.)

pub mod backup;

use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::json;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_client::MaintenanceClient, AlarmMember, AlarmRequest,
    AlarmType, StatusRequest,
};
use crate::proto::raftkinepb::{
    admin_client::AdminClient, AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse,
    RemoveNodeRequest,
};

/// Connects to a member's client API: `http://H:P`, `H:P` or `unix:///PATH`.
pub async fn connect(endpoint: &str) -> Result<Channel> {
    let unreachable = |e: tonic::transport::Error| {
        Error::Unavailable(format!("cannot reach raftkine at {endpoint}: {e}"))
    };
    if let Some(path) = endpoint.strip_prefix("unix://") {
        let path = path.to_string();
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        return Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(3))
            .connect_with_connector(connector)
            .await
            .map_err(unreachable);
    }
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Endpoint::from_shared(url)
        .map_err(|e| Error::Config(format!("endpoint {endpoint:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(unreachable)
}

fn status_error(s: tonic::Status) -> Error {
    Error::Unavailable(s.message().to_string())
}

/// `raftkine add-node`: prints the join command for a new node.
pub async fn add_node(endpoint: &str, ttl: Duration, json_out: bool) -> Result<()> {
    let answer = AdminClient::new(connect(endpoint).await?)
        .add_node(AddNodeRequest {
            ttl_seconds: ttl.as_secs() as i64,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if json_out {
        println!(
            "{}",
            json!({"join": answer.join, "expires_unix": answer.expires_unix})
        );
    } else {
        println!("From the node you want to add, run:");
        println!();
        println!("raftkine join {}", answer.join);
        println!();
        println!(
            "The token can be used once and expires in {}.",
            humantime::format_duration(ttl)
        );
    }
    Ok(())
}

async fn cluster_status(endpoint: &str) -> Result<ClusterStatusResponse> {
    let status = AdminClient::new(connect(endpoint).await?)
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    // Replication progress is known to the leader: ask it when this member is not.
    if status.members.iter().any(|m| m.is_leader)
        && !status.members.iter().any(|m| m.matched_index > 0)
    {
        let leader = status.members.iter().find(|m| m.is_leader);
        if let Some(url) = leader.and_then(|m| m.member.as_ref()?.client_ur_ls.first().cloned()) {
            if let Ok(channel) = connect(&url).await {
                if let Ok(answer) = AdminClient::new(channel)
                    .cluster_status(ClusterStatusRequest {})
                    .await
                {
                    return Ok(answer.into_inner());
                }
            }
        }
    }
    Ok(status)
}

/// `raftkine status`: the cluster as `microk8s status` shows it.
pub async fn status(endpoint: &str, json_out: bool) -> Result<()> {
    let s = cluster_status(endpoint).await?;
    let member = |m: &crate::proto::raftkinepb::MemberStatus| {
        let info = m.member.clone().unwrap_or_default();
        json!({
            "id": format!("{:x}", info.id),
            "name": info.name,
            "peer_urls": info.peer_ur_ls,
            "client_urls": info.client_ur_ls,
            "role": if info.is_learner { "standby" } else { "voter" },
            "leader": m.is_leader,
            "matched_index": m.matched_index,
            "lag": m.lag,
            "reachable": m.reachable,
            "failure_domain": m.failure_domain,
        })
    };
    let voters: Vec<_> = s
        .members
        .iter()
        .filter(|m| m.member.as_ref().is_some_and(|i| !i.is_learner))
        .collect();
    let standbys: Vec<_> = s
        .members
        .iter()
        .filter(|m| m.member.as_ref().is_some_and(|i| i.is_learner))
        .collect();
    let ha = voters.len() >= 3;
    if json_out {
        let doc = json!({
            "cluster_id": format!("{:x}", s.cluster_id),
            "high_availability": ha,
            "leader": format!("{:x}", s.leader),
            "term": s.term,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "revision": s.revision,
            "target_voters": s.target_voters,
            "db_size": s.db_size,
            "alarms": s.alarms,
            "leader_changes": s.leader_changes,
            "voters": voters.iter().map(|m| member(m)).collect::<Vec<_>>(),
            "standbys": standbys.iter().map(|m| member(m)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    println!("raftkine cluster {:x}", s.cluster_id);
    println!(
        "high-availability: {} ({} of {} voters)",
        if ha { "yes" } else { "no" },
        voters.len(),
        s.target_voters
    );
    let leader = s
        .members
        .iter()
        .find(|m| m.is_leader)
        .and_then(|m| m.member.as_ref())
        .map_or("none".to_string(), |m| format!("{} ({:x})", m.name, m.id));
    println!("leader: {leader}, term {}", s.term);
    println!(
        "revision {}, commit index {}, db size {} bytes",
        s.revision, s.commit_index, s.db_size
    );
    println!(
        "alarms: {}",
        if s.alarms.is_empty() {
            "none".to_string()
        } else {
            s.alarms.join(", ")
        }
    );
    println!("leader changes seen: {}", s.leader_changes);
    for (title, list) in [("voters", &voters), ("standbys", &standbys)] {
        println!("{title}:");
        if list.is_empty() {
            println!("  (none)");
        }
        for m in list.iter() {
            let info = m.member.clone().unwrap_or_default();
            println!(
                "  {:<16} {:x}  {}  matched {} lag {}{}{}{}",
                info.name,
                info.id,
                info.peer_ur_ls.first().map_or("", |u| u.as_str()),
                m.matched_index,
                m.lag,
                if m.is_leader { "  leader" } else { "" },
                if m.reachable { "" } else { "  unreachable" },
                if m.failure_domain != 0 {
                    format!("  failure-domain {}", m.failure_domain)
                } else {
                    String::new()
                },
            );
        }
    }
    Ok(())
}

/// `raftkine remove-node NODE`.
pub async fn remove_node(endpoint: &str, node: &str) -> Result<()> {
    let answer = AdminClient::new(connect(endpoint).await?)
        .remove_node(RemoveNodeRequest {
            node: node.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    println!("removed {node}; members now:");
    for m in answer.members {
        println!("  {} {:x} {}", m.name, m.id, m.peer_ur_ls.join(","));
    }
    Ok(())
}

/// `raftkine leave`: removes the member behind `endpoint` from its cluster.
pub async fn leave(endpoint: &str) -> Result<()> {
    let channel = connect(endpoint).await?;
    let me = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .header
        .map_or(0, |h| h.member_id);
    if me == 0 {
        return Err(Error::Unavailable(
            "the member did not say who it is".into(),
        ));
    }
    remove_node(endpoint, &format!("{me:x}")).await
}

async fn alarms(
    channel: Channel,
    action: AlarmAction,
    alarm: AlarmMember,
) -> Result<Vec<AlarmMember>> {
    Ok(MaintenanceClient::new(channel)
        .alarm(AlarmRequest {
            action: action as i32,
            member_id: alarm.member_id,
            alarm: alarm.alarm,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .alarms)
}

fn print_alarm(alarm: &AlarmMember) {
    println!(
        "{}",
        crate::api::maintenance::alarm_text(alarm.member_id, alarm.alarm)
    );
}

/// `raftkine alarm list`: the raised alarms, one per line as etcdctl prints them.
pub async fn alarm_list(endpoint: &str) -> Result<()> {
    let any = AlarmMember {
        member_id: 0,
        alarm: AlarmType::None as i32,
    };
    for alarm in alarms(connect(endpoint).await?, AlarmAction::Get, any).await? {
        print_alarm(&alarm);
    }
    Ok(())
}

/// `raftkine alarm disarm`: deactivates every raised alarm (as `etcdctl alarm disarm`) and prints
/// those it disarmed. A cause still present (low disk space) raises its alarm again.
pub async fn alarm_disarm(endpoint: &str) -> Result<()> {
    let channel = connect(endpoint).await?;
    let any = AlarmMember {
        member_id: 0,
        alarm: AlarmType::None as i32,
    };
    for alarm in alarms(channel.clone(), AlarmAction::Get, any).await? {
        for disarmed in alarms(channel.clone(), AlarmAction::Deactivate, alarm).await? {
            print_alarm(&disarmed);
        }
    }
    Ok(())
}
