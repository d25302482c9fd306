//! Cluster.MemberList.

use crate::common::*;

#[tokio::test]
async fn member_list_has_this_member() {
    let (s, mut c) = start().await;
    let r = c.member_list().await.unwrap();
    let h = r.header().expect("header");
    assert_ne!(h.cluster_id(), 0);
    let members = r.members();
    assert_eq!(members.len(), 1, "single-node cluster: {members:?}");
    let m = &members[0];
    assert_eq!(m.id(), h.member_id(), "the member is the one answering");
    assert!(!m.is_learner());
    assert!(!m.peer_urls().is_empty(), "peer URLs: {m:?}");
    let want = format!("127.0.0.1:{}", s.port);
    assert!(
        m.client_urls().iter().any(|u| u.contains(&want)),
        "client URLs {:?} should include {want}",
        m.client_urls()
    );
    let st = c.status().await.unwrap();
    assert_eq!(st.header().unwrap().member_id(), m.id());
    assert_eq!(st.header().unwrap().cluster_id(), h.cluster_id());
}
