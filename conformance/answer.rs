//! Normalised answers: every etcd-client response (or error) turned into a plain value that holds
//! exactly what the suite compares. Member id, cluster id and raft term are left out on purpose;
//! everything else a response carries (header revision, kvs with all their fields, `more`,
//! `count`, `deleted`, prev_kvs, txn results, lease fields, gRPC error code + message) is kept.
//! Two servers agree on an operation when their `Answer`s are equal.

use etcd_client::{
    CompactionResponse, DeleteResponse, Error, GetResponse, KeyValue, LeaseGrantResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, PutResponse, ResponseHeader,
    TxnOpResponse, TxnResponse,
};

/// Bytes shown as an escaped ASCII string (`\x00`, `\n`, ...), so answers print readably.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// A key-value with all of its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl Kv {
    pub fn from_client(kv: &KeyValue) -> Kv {
        Kv {
            key: show(kv.key()),
            value: show(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }
}

fn kvs(list: &[KeyValue]) -> Vec<Kv> {
    list.iter().map(Kv::from_client).collect()
}

/// The comparable part of a response header: its presence and revision.
pub fn rev(header: Option<&ResponseHeader>) -> Option<i64> {
    header.map(|h| h.revision())
}

/// Whether a lease still has time left, without the timing-dependent number itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// `ttl == -1`: expired or unknown lease.
    Gone,
    /// `0 < ttl <= granted_ttl`.
    Alive,
    /// Anything else (always a bug on either side), with the number.
    Odd(i64),
}

impl Ttl {
    fn classify(ttl: i64, granted: i64) -> Ttl {
        match ttl {
            -1 => Ttl::Gone,
            t if t > 0 && t <= granted.max(1) => Ttl::Alive,
            t => Ttl::Odd(t),
        }
    }
}

/// One normalised answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Put {
        rev: Option<i64>,
        prev_kv: Option<Kv>,
    },
    Range {
        rev: Option<i64>,
        kvs: Vec<Kv>,
        more: bool,
        count: i64,
    },
    Delete {
        rev: Option<i64>,
        deleted: i64,
        prev_kvs: Vec<Kv>,
    },
    Txn {
        rev: Option<i64>,
        succeeded: bool,
        responses: Vec<Answer>,
    },
    Compact {
        rev: Option<i64>,
    },
    LeaseGrant {
        rev: Option<i64>,
        id: i64,
        ttl: i64,
        error: String,
    },
    LeaseRevoke {
        rev: Option<i64>,
    },
    TimeToLive {
        rev: Option<i64>,
        id: i64,
        ttl: Ttl,
        granted_ttl: i64,
        /// Sorted: etcd lists them in Go map order.
        keys: Vec<String>,
    },
    Leases {
        rev: Option<i64>,
        /// Sorted: etcd lists them in Go map order.
        ids: Vec<i64>,
    },
    /// A failed call: gRPC code and message (or the client-side error text).
    Error {
        code: String,
        message: String,
    },
}

impl Answer {
    /// The header revision, if the answer has one.
    pub fn revision(&self) -> Option<i64> {
        match self {
            Answer::Put { rev, .. }
            | Answer::Range { rev, .. }
            | Answer::Delete { rev, .. }
            | Answer::Txn { rev, .. }
            | Answer::Compact { rev }
            | Answer::LeaseGrant { rev, .. }
            | Answer::LeaseRevoke { rev }
            | Answer::TimeToLive { rev, .. }
            | Answer::Leases { rev, .. } => *rev,
            Answer::Error { .. } => None,
        }
    }

    /// `code: message` for errors, the debug form otherwise.
    pub fn short(&self) -> String {
        match self {
            Answer::Error { code, message } => format!("{code}: {message}"),
            other => format!("{other:?}"),
        }
    }

    pub fn error(e: Error) -> Answer {
        match e {
            Error::GRpcStatus(s) => Answer::Error {
                code: format!("{:?}", s.code()),
                message: s.message().to_string(),
            },
            other => Answer::Error {
                code: "client".into(),
                message: other.to_string(),
            },
        }
    }

    pub fn put(r: &PutResponse) -> Answer {
        Answer::Put {
            rev: rev(r.header()),
            prev_kv: r.prev_key().map(Kv::from_client),
        }
    }

    pub fn range(r: &GetResponse) -> Answer {
        Answer::Range {
            rev: rev(r.header()),
            kvs: kvs(r.kvs()),
            more: r.more(),
            count: r.count(),
        }
    }

    pub fn delete(r: &DeleteResponse) -> Answer {
        Answer::Delete {
            rev: rev(r.header()),
            deleted: r.deleted(),
            prev_kvs: kvs(r.prev_kvs()),
        }
    }

    pub fn txn(r: &TxnResponse) -> Answer {
        let responses = r
            .op_responses()
            .iter()
            .map(|op| match op {
                TxnOpResponse::Put(p) => Answer::put(p),
                TxnOpResponse::Get(g) => Answer::range(g),
                TxnOpResponse::Delete(d) => Answer::delete(d),
                TxnOpResponse::Txn(t) => Answer::txn(t),
            })
            .collect();
        Answer::Txn {
            rev: rev(r.header()),
            succeeded: r.succeeded(),
            responses,
        }
    }

    pub fn compact(r: &CompactionResponse) -> Answer {
        Answer::Compact {
            rev: rev(r.header()),
        }
    }

    pub fn lease_grant(r: &LeaseGrantResponse) -> Answer {
        Answer::LeaseGrant {
            rev: rev(r.header()),
            id: r.id(),
            ttl: r.ttl(),
            error: r.error().to_string(),
        }
    }

    pub fn lease_revoke(r: &LeaseRevokeResponse) -> Answer {
        Answer::LeaseRevoke {
            rev: rev(r.header()),
        }
    }

    pub fn time_to_live(r: &LeaseTimeToLiveResponse) -> Answer {
        let mut keys: Vec<String> = r.keys().iter().map(|k| show(k)).collect();
        keys.sort();
        Answer::TimeToLive {
            rev: rev(r.header()),
            id: r.id(),
            ttl: Ttl::classify(r.ttl(), r.granted_ttl()),
            granted_ttl: r.granted_ttl(),
            keys,
        }
    }

    pub fn leases(r: &LeaseLeasesResponse) -> Answer {
        let mut ids: Vec<i64> = r.leases().iter().map(|l| l.id()).collect();
        ids.sort();
        Answer::Leases {
            rev: rev(r.header()),
            ids,
        }
    }
}
