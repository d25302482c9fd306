//! Errors of every layer, and the one table that maps them to etcd's gRPC status codes and messages.

use tonic::{Code, Status};

/// Everything that can go wrong serving a request. The `Display` text of the etcd variants is the
/// exact message etcd sends, which clients (etcdctl, client libraries, kube-apiserver) match on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The request was proposed, then the leader was lost: it may or may not be applied.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutLeaderFail,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A peer or the cluster could not be reached (retryable).
    #[error("{0}")]
    Unavailable(String),
    /// A snapshot file that is not a well-formed etcd (bbolt) database.
    #[error("snapshot: {0}")]
    BadSnapshot(String),
    /// A snapshot file without the SHA-256 trailer `etcdctl snapshot save` leaves.
    #[error("snapshot has no sha256 trailer (a bare database file? --skip-hash-check accepts it)")]
    MissingChecksum,
    #[error("snapshot checksum mismatch: the trailer says sha256 {expected}, the data hashes to {actual} (damaged or truncated file)")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("storage dir {} is not empty: restore makes a new data dir (remove it or choose another)", .0.display())]
    StorageDirNotEmpty(std::path::PathBuf),
}

/// Result with raftkine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code etcd uses for this error (etcd's api/v3rpc/rpctypes).
    pub fn code(&self) -> Code {
        use Error::*;
        match self {
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge | InvalidArgument(_) => Code::InvalidArgument,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists | NotLeader | AuthNotEnabled | NotCapable | PeerUrlExists => {
                Code::FailedPrecondition
            }
            NoLeader | Timeout | TimeoutLeaderFail | Stopped | Unavailable(_) => Code::Unavailable,
            Storage(_) | Corrupt(_) | Raft(_) | Io(_) | Config(_) | Metrics(_) => Code::Internal,
            BadSnapshot(_) | MissingChecksum | ChecksumMismatch { .. } => Code::DataLoss,
            StorageDirNotEmpty(_) => Code::FailedPrecondition,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Error {
        Error::Corrupt(e.to_string())
    }
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Error {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::Storage(e),
        }
    }
}
