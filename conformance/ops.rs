//! Operations the suite sends: a plain description of each KV/lease request (printable, so a
//! divergence report shows exactly what was sent), small builders for writing scripts, and
//! `execute`, which sends one operation through etcd-client and normalises the answer.

use std::fmt;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, LeaseGrantOptions,
    LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn as ClientTxn, TxnOp,
};

use crate::answer::Answer;

/// The range end that makes `key` a prefix (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).unwrap();
        }
    }
    "\0".to_string()
}

/// One request to both servers.
#[derive(Clone, Debug)]
pub enum Op {
    Put(Put),
    Range(Range),
    Delete(Delete),
    Txn(Txn),
    Compact { revision: i64, physical: bool },
    LeaseGrant { id: i64, ttl: i64 },
    LeaseRevoke { id: i64 },
    TimeToLive { id: i64, keys: bool },
    Leases,
}

#[derive(Clone, Debug, Default)]
pub struct Put {
    pub key: String,
    pub value: String,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Range {
    pub key: String,
    /// Empty: the single key; `"\0"`: every key from `key` on.
    pub end: String,
    pub revision: i64,
    pub limit: i64,
    pub sort: Option<(SortTarget, SortOrder)>,
    pub keys_only: bool,
    pub count_only: bool,
    pub serializable: bool,
    pub min_mod: i64,
    pub max_mod: i64,
    pub min_create: i64,
    pub max_create: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Delete {
    pub key: String,
    pub end: String,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Txn {
    pub compares: Vec<Cmp>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Clone, Debug)]
pub struct Cmp {
    pub key: String,
    pub end: String,
    pub target: Target,
    pub result: CompareOp,
}

#[derive(Clone, Debug)]
pub enum Target {
    Value(String),
    Version(i64),
    Create(i64),
    Mod(i64),
    Lease(i64),
}

// ----- builders for scripts -------------------------------------------------------------------

pub fn put(key: &str, value: &str) -> Put {
    Put {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

impl Put {
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    pub fn lease(mut self, id: i64) -> Self {
        self.lease = id;
        self
    }
    pub fn ignore_value(mut self) -> Self {
        self.ignore_value = true;
        self
    }
    pub fn ignore_lease(mut self) -> Self {
        self.ignore_lease = true;
        self
    }
}

pub fn get(key: &str) -> Range {
    Range {
        key: key.into(),
        ..Default::default()
    }
}

impl Range {
    pub fn end(mut self, end: &str) -> Self {
        self.end = end.into();
        self
    }
    pub fn prefix(mut self) -> Self {
        self.end = prefix_end(&self.key);
        self
    }
    pub fn through_last_key(self) -> Self {
        self.end("\0")
    }
    pub fn rev(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort = Some((target, order));
        self
    }
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
    pub fn serializable(mut self) -> Self {
        self.serializable = true;
        self
    }
    pub fn mod_between(mut self, min: i64, max: i64) -> Self {
        self.min_mod = min;
        self.max_mod = max;
        self
    }
    pub fn create_between(mut self, min: i64, max: i64) -> Self {
        self.min_create = min;
        self.max_create = max;
        self
    }
}

pub fn del(key: &str) -> Delete {
    Delete {
        key: key.into(),
        ..Default::default()
    }
}

impl Delete {
    pub fn end(mut self, end: &str) -> Self {
        self.end = end.into();
        self
    }
    pub fn prefix(mut self) -> Self {
        self.end = prefix_end(&self.key);
        self
    }
    pub fn through_last_key(self) -> Self {
        self.end("\0")
    }
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

pub fn txn() -> Txn {
    Txn::default()
}

impl Txn {
    pub fn when(mut self, compares: Vec<Cmp>) -> Self {
        self.compares = compares;
        self
    }
    pub fn then(mut self, ops: Vec<Op>) -> Self {
        self.success = ops;
        self
    }
    pub fn otherwise(mut self, ops: Vec<Op>) -> Self {
        self.failure = ops;
        self
    }
}

fn cmp(key: &str, result: CompareOp, target: Target) -> Cmp {
    Cmp {
        key: key.into(),
        end: String::new(),
        target,
        result,
    }
}

pub fn value(key: &str, result: CompareOp, v: &str) -> Cmp {
    cmp(key, result, Target::Value(v.into()))
}
pub fn version(key: &str, result: CompareOp, v: i64) -> Cmp {
    cmp(key, result, Target::Version(v))
}
pub fn create(key: &str, result: CompareOp, r: i64) -> Cmp {
    cmp(key, result, Target::Create(r))
}
pub fn modr(key: &str, result: CompareOp, r: i64) -> Cmp {
    cmp(key, result, Target::Mod(r))
}
pub fn lease(key: &str, result: CompareOp, id: i64) -> Cmp {
    cmp(key, result, Target::Lease(id))
}

impl Cmp {
    pub fn end(mut self, end: &str) -> Self {
        self.end = end.into();
        self
    }
    pub fn prefix(mut self) -> Self {
        self.end = prefix_end(&self.key);
        self
    }
}

impl From<Put> for Op {
    fn from(p: Put) -> Op {
        Op::Put(p)
    }
}
impl From<Range> for Op {
    fn from(r: Range) -> Op {
        Op::Range(r)
    }
}
impl From<Delete> for Op {
    fn from(d: Delete) -> Op {
        Op::Delete(d)
    }
}
impl From<Txn> for Op {
    fn from(t: Txn) -> Op {
        Op::Txn(t)
    }
}

pub fn compact(revision: i64) -> Op {
    Op::Compact {
        revision,
        physical: false,
    }
}
pub fn grant(id: i64, ttl: i64) -> Op {
    Op::LeaseGrant { id, ttl }
}
pub fn revoke(id: i64) -> Op {
    Op::LeaseRevoke { id }
}
pub fn time_to_live(id: i64) -> Op {
    Op::TimeToLive { id, keys: true }
}

// ----- conversion to etcd-client requests ------------------------------------------------------

impl Put {
    fn options(&self) -> PutOptions {
        let mut o = PutOptions::new().with_lease(self.lease);
        if self.prev_kv {
            o = o.with_prev_key();
        }
        if self.ignore_value {
            o = o.with_ignore_value();
        }
        if self.ignore_lease {
            o = o.with_ignore_lease();
        }
        o
    }
}

impl Range {
    fn options(&self) -> GetOptions {
        let mut o = GetOptions::new()
            .with_revision(self.revision)
            .with_limit(self.limit)
            .with_min_mod_revision(self.min_mod)
            .with_max_mod_revision(self.max_mod)
            .with_min_create_revision(self.min_create)
            .with_max_create_revision(self.max_create);
        if !self.end.is_empty() {
            o = o.with_range(self.end.clone());
        }
        if let Some((target, order)) = self.sort {
            o = o.with_sort(target, order);
        }
        if self.keys_only {
            o = o.with_keys_only();
        }
        if self.count_only {
            o = o.with_count_only();
        }
        if self.serializable {
            o = o.with_serializable();
        }
        o
    }
}

impl Delete {
    fn options(&self) -> DeleteOptions {
        let mut o = DeleteOptions::new();
        if !self.end.is_empty() {
            o = o.with_range(self.end.clone());
        }
        if self.prev_kv {
            o = o.with_prev_key();
        }
        o
    }
}

impl Cmp {
    fn to_client(&self) -> Compare {
        let key = self.key.clone();
        let c = match &self.target {
            Target::Value(v) => Compare::value(key, self.result, v.clone()),
            Target::Version(v) => Compare::version(key, self.result, *v),
            Target::Create(r) => Compare::create_revision(key, self.result, *r),
            Target::Mod(r) => Compare::mod_revision(key, self.result, *r),
            Target::Lease(l) => Compare::lease(key, self.result, *l),
        };
        if self.end.is_empty() {
            c
        } else {
            c.with_range(self.end.clone())
        }
    }
}

impl Txn {
    fn to_client(&self) -> ClientTxn {
        let ops = |list: &[Op]| list.iter().map(txn_op).collect::<Vec<_>>();
        ClientTxn::new()
            .when(self.compares.iter().map(Cmp::to_client).collect::<Vec<_>>())
            .and_then(ops(&self.success))
            .or_else(ops(&self.failure))
    }
}

fn txn_op(op: &Op) -> TxnOp {
    match op {
        Op::Put(p) => TxnOp::put(p.key.clone(), p.value.clone(), Some(p.options())),
        Op::Range(r) => TxnOp::get(r.key.clone(), Some(r.options())),
        Op::Delete(d) => TxnOp::delete(d.key.clone(), Some(d.options())),
        Op::Txn(t) => TxnOp::txn(t.to_client()),
        other => panic!("not a txn operation: {other}"),
    }
}

/// Sends `op` to one server and normalises what comes back.
pub async fn execute(client: &mut Client, op: &Op) -> Answer {
    let answer = match op {
        Op::Put(p) => client
            .put(p.key.clone(), p.value.clone(), Some(p.options()))
            .await
            .map(|r| Answer::put(&r)),
        Op::Range(r) => client
            .get(r.key.clone(), Some(r.options()))
            .await
            .map(|r| Answer::range(&r)),
        Op::Delete(d) => client
            .delete(d.key.clone(), Some(d.options()))
            .await
            .map(|r| Answer::delete(&r)),
        Op::Txn(t) => client.txn(t.to_client()).await.map(|r| Answer::txn(&r)),
        Op::Compact { revision, physical } => {
            let mut o = CompactionOptions::new();
            if *physical {
                o = o.with_physical();
            }
            client
                .compact(*revision, Some(o))
                .await
                .map(|r| Answer::compact(&r))
        }
        Op::LeaseGrant { id, ttl } => client
            .lease_grant(*ttl, Some(LeaseGrantOptions::new().with_id(*id)))
            .await
            .map(|r| Answer::lease_grant(&r)),
        Op::LeaseRevoke { id } => client
            .lease_revoke(*id)
            .await
            .map(|r| Answer::lease_revoke(&r)),
        Op::TimeToLive { id, keys } => {
            let mut o = LeaseTimeToLiveOptions::new();
            if *keys {
                o = o.with_keys();
            }
            client
                .lease_time_to_live(*id, Some(o))
                .await
                .map(|r| Answer::time_to_live(&r))
        }
        Op::Leases => client.leases().await.map(|r| Answer::leases(&r)),
    };
    answer.unwrap_or_else(Answer::error)
}

// ----- printing --------------------------------------------------------------------------------

/// `"key"` or `["key", "end")`.
fn range_text(key: &str, end: &str) -> String {
    match end {
        "" => format!("{key:?}"),
        "\0" => format!("[{key:?}, from-key)"),
        _ => format!("[{key:?}, {end:?})"),
    }
}

fn flag(out: &mut String, on: bool, name: &str) {
    if on {
        out.push(' ');
        out.push_str(name);
    }
}

fn num(out: &mut String, n: i64, name: &str) {
    if n != 0 {
        out.push_str(&format!(" {name}={n}"));
    }
}

impl fmt::Display for Put {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!("put {:?} {:?}", self.key, self.value);
        num(&mut s, self.lease, "lease");
        flag(&mut s, self.prev_kv, "prev_kv");
        flag(&mut s, self.ignore_value, "ignore_value");
        flag(&mut s, self.ignore_lease, "ignore_lease");
        f.write_str(&s)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!("get {}", range_text(&self.key, &self.end));
        num(&mut s, self.revision, "rev");
        num(&mut s, self.limit, "limit");
        if let Some((t, o)) = self.sort {
            s.push_str(&format!(" sort={t:?}/{o:?}"));
        }
        flag(&mut s, self.keys_only, "keys_only");
        flag(&mut s, self.count_only, "count_only");
        flag(&mut s, self.serializable, "serializable");
        num(&mut s, self.min_mod, "min_mod");
        num(&mut s, self.max_mod, "max_mod");
        num(&mut s, self.min_create, "min_create");
        num(&mut s, self.max_create, "max_create");
        f.write_str(&s)
    }
}

impl fmt::Display for Delete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!("del {}", range_text(&self.key, &self.end));
        flag(&mut s, self.prev_kv, "prev_kv");
        f.write_str(&s)
    }
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.result {
            CompareOp::Equal => "=",
            CompareOp::NotEqual => "!=",
            CompareOp::Greater => ">",
            CompareOp::Less => "<",
        };
        let (name, v) = match &self.target {
            Target::Value(v) => ("value", format!("{v:?}")),
            Target::Version(v) => ("version", v.to_string()),
            Target::Create(v) => ("create", v.to_string()),
            Target::Mod(v) => ("mod", v.to_string()),
            Target::Lease(v) => ("lease", v.to_string()),
        };
        write!(f, "{name}({}) {op} {v}", range_text(&self.key, &self.end))
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "txn if [{}] then [{}] else [{}]",
            list(&self.compares),
            list(&self.success),
            list(&self.failure)
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put(p) => p.fmt(f),
            Op::Range(r) => r.fmt(f),
            Op::Delete(d) => d.fmt(f),
            Op::Txn(t) => t.fmt(f),
            Op::Compact { revision, physical } => {
                write!(
                    f,
                    "compact {revision}{}",
                    if *physical { " physical" } else { "" }
                )
            }
            Op::LeaseGrant { id, ttl } => write!(f, "lease grant id={id} ttl={ttl}"),
            Op::LeaseRevoke { id } => write!(f, "lease revoke id={id}"),
            Op::TimeToLive { id, keys } => {
                write!(
                    f,
                    "lease timetolive id={id}{}",
                    if *keys { " keys" } else { "" }
                )
            }
            Op::Leases => write!(f, "lease list"),
        }
    }
}
