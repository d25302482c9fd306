//! Shared pieces of the Kubernetes-shaped scenarios: object keys and bodies as kube-apiserver
//! stores them, loading objects, and the apiserver's paginated list (limit N, continuing from
//! the last key + "\0" at the revision of the first page).

use std::sync::Arc;

use anyhow::{anyhow, Result};
use etcd_client::{GetOptions, KvClient};
use tokio::task::JoinSet;

use super::Ctx;

/// The end of the range holding every key under `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A JSON-looking object body of about `size` bytes.
pub fn object_body(name: &str, size: usize) -> Vec<u8> {
    let head = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"{name}\"}},\"data\":{{\"blob\":\""
    );
    let tail = "\"}}";
    let mut body = head.into_bytes();
    let fill = size.saturating_sub(body.len() + tail.len());
    body.extend(std::iter::repeat_n(b'x', fill));
    body.extend_from_slice(tail.as_bytes());
    body
}

/// What one paginated list read.
pub struct Listed {
    pub pages: u64,
    pub items: u64,
    pub revision: i64,
}

/// Lists every key under `prefix`, `limit` per page. The first page is read at `revision`
/// (0: the latest, linearizable), the next ones at the first page's revision.
pub async fn paged_list(
    kv: &mut KvClient,
    prefix: &[u8],
    limit: i64,
    revision: i64,
) -> Result<Listed> {
    let end = prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut listed = Listed {
        pages: 0,
        items: 0,
        revision,
    };
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if listed.revision > 0 {
            options = options.with_revision(listed.revision);
        }
        let resp = kv.get(start, Some(options)).await?;
        listed.pages += 1;
        if listed.revision == 0 {
            listed.revision = resp
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| anyhow!("range response without a header"))?;
        }
        let kvs = resp.kvs();
        listed.items += kvs.len() as u64;
        match kvs.last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok(listed),
        }
    }
}

/// Writes `keys` (with bodies of `size` bytes) using up to `concurrency` parallel puts;
/// returns the mod revision of each key, in order.
pub async fn load_objects(
    ctx: &Ctx,
    keys: Vec<String>,
    size: usize,
    concurrency: usize,
) -> Result<Vec<i64>> {
    let keys = Arc::new(keys);
    let lanes = concurrency.clamp(1, keys.len().max(1));
    let mut tasks = JoinSet::new();
    for lane in 0..lanes {
        let keys = keys.clone();
        let mut kv = ctx.pool().await?.client(lane).kv_client();
        tasks.spawn(async move {
            let mut revs = Vec::new();
            for i in (lane..keys.len()).step_by(lanes) {
                let resp = kv
                    .put(keys[i].clone(), object_body(&keys[i], size), None)
                    .await?;
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                revs.push((i, rev));
            }
            Ok::<_, anyhow::Error>(revs)
        });
    }
    let mut revs = vec![0; keys.len()];
    while let Some(joined) = tasks.join_next().await {
        for (i, rev) in joined?? {
            revs[i] = rev;
        }
    }
    Ok(revs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }

    #[test]
    fn object_body_has_the_size() {
        assert_eq!(object_body("x", 4096).len(), 4096);
    }
}
