//! `raftkine migrate`: copies every key under a prefix from a live etcd, kine or k8s-dqlite
//! endpoint (or from a k8s-dqlite migrator backup dir) into a running raftkine, with progress,
//! then checks that both sides hold the same number of keys with the same checksum.
//!
//! The source is read at one revision (a consistent cut) in pages; the target gets the keys in
//! txns of at most [`BATCH_OPS`] puts and [`BATCH_BYTES`]. Keys attached to a lease get a lease
//! with the same id and the source's remaining TTL. Revisions are not preserved (the target
//! assigns its own); `raftkine restore` of an etcd snapshot keeps them.

use std::collections::HashMap;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use super::backup_dir;
use super::endpoint::{connect, TlsFiles};
use crate::error::{Error, Result};
use crate::proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, request_op, LeaseGrantRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::store::schema::prefix_end;

/// Keys read per page from the source.
const PAGE: i64 = 500;
/// Most puts in one txn written to the target (below etcd's default of 128).
pub const BATCH_OPS: usize = 100;
/// Most bytes of keys and values in one txn (below the 1.5 MiB request limit).
pub const BATCH_BYTES: usize = 1024 * 1024;

/// One key to copy.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: bytes::Bytes,
    pub lease: i64,
}

/// Count and SHA-256 over (key, value) pairs in key order.
#[derive(Default)]
pub struct Tally {
    pub keys: u64,
    hasher: Sha256,
}

impl Tally {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.keys += 1;
        self.hasher.update((key.len() as u64).to_be_bytes());
        self.hasher.update(key);
        self.hasher.update((value.len() as u64).to_be_bytes());
        self.hasher.update(value);
    }

    pub fn checksum(&self) -> String {
        crate::tls::hex(&self.hasher.clone().finalize())
    }
}

/// The key range of `prefix` ("" = every key).
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    (
        prefix.to_vec(),
        prefix_end(prefix).unwrap_or_else(|| vec![0]),
    )
}

fn unavailable(what: &str) -> impl Fn(tonic::Status) -> Error + '_ {
    move |s| Error::Unavailable(format!("{what}: {}", s.message()))
}

/// Reads every key under a prefix at one revision (that of the first page), a page at a
/// time in key order.
pub struct Pager {
    kv: KvClient<Channel>,
    from: Vec<u8>,
    end: Vec<u8>,
    /// The revision read at (0 until the first page).
    pub revision: i64,
    done: bool,
}

impl Pager {
    pub fn new(kv: KvClient<Channel>, prefix: &[u8]) -> Pager {
        let (from, end) = prefix_range(prefix);
        Pager {
            kv,
            from,
            end,
            revision: 0,
            done: false,
        }
    }

    /// The next page, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Entry>>> {
        if self.done {
            return Ok(None);
        }
        let resp = self
            .kv
            .range(RangeRequest {
                key: self.from.clone(),
                range_end: self.end.clone(),
                limit: PAGE,
                revision: self.revision,
                ..Default::default()
            })
            .await
            .map_err(unavailable("reading the source"))?
            .into_inner();
        if self.revision == 0 {
            self.revision = resp.header.as_ref().map_or(0, |h| h.revision);
        }
        let entries: Vec<Entry> = resp
            .kvs
            .into_iter()
            .map(|kv| Entry {
                key: kv.key,
                value: kv.value,
                lease: kv.lease,
            })
            .collect();
        match entries.last() {
            Some(last) if resp.more => {
                self.from = last.key.clone();
                self.from.push(0);
            }
            _ => self.done = true,
        }
        Ok(Some(entries))
    }
}

/// How many keys `prefix` holds (count only).
pub async fn count(kv: &mut KvClient<Channel>, prefix: &[u8]) -> Result<i64> {
    let (key, range_end) = prefix_range(prefix);
    Ok(kv
        .range(RangeRequest {
            key,
            range_end,
            count_only: true,
            ..Default::default()
        })
        .await
        .map_err(unavailable("counting keys"))?
        .into_inner()
        .count)
}

/// Writes entries to an etcd-compatible target in txns; leases are granted there first with
/// the TTL `ttl_of` reports (keys whose lease is gone are written without one).
pub struct Writer {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    leases: HashMap<i64, bool>,
}

impl Writer {
    pub fn new(channel: Channel) -> Writer {
        Writer {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
            leases: HashMap::new(),
        }
    }

    /// Grants lease `id` on the target with `ttl` seconds once; false when `ttl` says the
    /// lease is gone.
    async fn ensure_lease(&mut self, id: i64, ttl: i64) -> Result<bool> {
        if let Some(ok) = self.leases.get(&id) {
            return Ok(*ok);
        }
        let ok = ttl > 0;
        if ok {
            let granted = self.lease.lease_grant(LeaseGrantRequest { ttl, id }).await;
            if let Err(s) = granted {
                // Already granted by an earlier run: the keys can still attach to it.
                if !s.message().contains("lease already exists") {
                    return Err(Error::Unavailable(format!(
                        "granting lease {id:x}: {}",
                        s.message()
                    )));
                }
            }
        }
        self.leases.insert(id, ok);
        Ok(ok)
    }

    /// Puts `entries` (leases resolved through `ttls`: id → remaining seconds).
    pub async fn put_all(&mut self, entries: &[Entry], ttls: &HashMap<i64, i64>) -> Result<()> {
        let mut batch: Vec<RequestOp> = vec![];
        let mut bytes = 0;
        for e in entries {
            let lease = if e.lease != 0 {
                let ttl = ttls.get(&e.lease).copied().unwrap_or(0);
                if self.ensure_lease(e.lease, ttl).await? {
                    e.lease
                } else {
                    0
                }
            } else {
                0
            };
            if batch.len() >= BATCH_OPS || bytes + e.key.len() + e.value.len() > BATCH_BYTES {
                self.commit(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += e.key.len() + e.value.len();
            batch.push(RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: e.key.clone(),
                    value: e.value.clone(),
                    lease,
                    ..Default::default()
                })),
            });
        }
        self.commit(batch).await
    }

    async fn commit(&mut self, success: Vec<RequestOp>) -> Result<()> {
        if success.is_empty() {
            return Ok(());
        }
        self.kv
            .txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await
            .map_err(unavailable("writing to the target"))?;
        Ok(())
    }
}

/// Remaining TTLs of the leases `entries` use, asked of the source.
async fn lease_ttls(
    source: &mut LeaseClient<Channel>,
    entries: &[Entry],
    known: &mut HashMap<i64, i64>,
) -> Result<()> {
    for e in entries.iter().filter(|e| e.lease != 0) {
        if known.contains_key(&e.lease) {
            continue;
        }
        let ttl = source
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: e.lease,
                keys: false,
            })
            .await
            .map(|r| r.into_inner().ttl)
            .unwrap_or(-1);
        known.insert(e.lease, ttl);
    }
    Ok(())
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} keys ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// What a migration did.
pub struct Report {
    pub keys: u64,
    pub checksum: String,
    pub source_revision: i64,
}

/// `raftkine migrate --from ENDPOINT`: copies, then verifies the target.
pub async fn migrate(from: &str, tls: &TlsFiles, to: &str, prefix: &[u8]) -> Result<Report> {
    let source = connect(from, tls).await?;
    let mut source_kv = KvClient::new(source.clone());
    let mut source_lease = LeaseClient::new(source);
    let target = crate::cli::connect(to).await?;
    let mut writer = Writer::new(target.clone());
    let total = count(&mut source_kv, prefix).await?;
    let bar = progress(total.max(0) as u64);
    let mut tally = Tally::default();
    let mut ttls = HashMap::new();
    let mut pager = Pager::new(source_kv, prefix);
    while let Some(page) = pager.next().await? {
        for e in &page {
            tally.add(&e.key, &e.value);
        }
        lease_ttls(&mut source_lease, &page, &mut ttls).await?;
        writer.put_all(&page, &ttls).await?;
        bar.inc(page.len() as u64);
    }
    let revision = pager.revision;
    bar.finish();
    verify(target, prefix, &tally).await?;
    Ok(Report {
        keys: tally.keys,
        checksum: tally.checksum(),
        source_revision: revision,
    })
}

/// `raftkine migrate --from-dir DIR`: imports a k8s-dqlite migrator backup dir, then verifies.
pub async fn import_dir(dir: &Path, to: &str) -> Result<Report> {
    let entries = backup_dir::read(dir)?;
    let target = crate::cli::connect(to).await?;
    let mut writer = Writer::new(target.clone());
    let bar = progress(entries.len() as u64);
    for chunk in entries.chunks(PAGE as usize) {
        writer.put_all(chunk, &HashMap::new()).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    // The dir has no order guarantee (k8s-dqlite writes descending); checksum in key order,
    // keeping the last value of a key written twice.
    let mut latest: std::collections::BTreeMap<&[u8], &[u8]> = Default::default();
    for e in &entries {
        latest.insert(&e.key, &e.value);
    }
    let mut tally = Tally::default();
    for (k, v) in latest {
        tally.add(k, v);
    }
    verify_keys(
        target,
        &tally,
        entries.iter().map(|e| e.key.clone()).collect(),
    )
    .await?;
    Ok(Report {
        keys: tally.keys,
        checksum: tally.checksum(),
        source_revision: 0,
    })
}

/// The target holds the same keys and values under `prefix` as the tally says.
async fn verify(target: Channel, prefix: &[u8], expected: &Tally) -> Result<()> {
    let mut pager = Pager::new(KvClient::new(target), prefix);
    let mut got = Tally::default();
    while let Some(page) = pager.next().await? {
        for e in &page {
            got.add(&e.key, &e.value);
        }
    }
    compare(expected, &got)
}

/// Like [`verify`] for exactly `keys` (an import does not own a prefix).
async fn verify_keys(target: Channel, expected: &Tally, mut keys: Vec<Vec<u8>>) -> Result<()> {
    keys.sort();
    keys.dedup();
    let mut kv = KvClient::new(target);
    let mut got = Tally::default();
    for key in keys {
        let resp = kv
            .range(RangeRequest {
                key,
                ..Default::default()
            })
            .await
            .map_err(unavailable("verifying the target"))?
            .into_inner();
        for e in resp.kvs {
            got.add(&e.key, &e.value);
        }
    }
    compare(expected, &got)
}

fn compare(expected: &Tally, got: &Tally) -> Result<()> {
    if expected.keys != got.keys || expected.checksum() != got.checksum() {
        return Err(Error::Config(format!(
            "verification failed: the source has {} keys (sha256 {}), the target {} keys (sha256 {})",
            expected.keys,
            expected.checksum(),
            got.keys,
            got.checksum()
        )));
    }
    Ok(())
}
