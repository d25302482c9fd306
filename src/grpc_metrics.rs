//! go-grpc-prometheus's server counters (`grpc_server_started_total`, `grpc_server_handled_total`)
//! for every call on the client listeners, as a tower layer wrapped around the tonic server, so
//! every service is counted without touching the services.
//!
//! A call is started when its request arrives and handled when its status is known: from the
//! response headers for a trailers-only answer (errors), from the trailers at the end of the
//! response body otherwise (successful unary calls and every stream). A call whose response is
//! dropped before that (the client went away) counts as `Canceled`, as in grpc-go. Only the
//! methods raftkine serves are counted (an arbitrary path must not create label values).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::metrics::metrics;

/// The layer: `Server::builder().layer(GrpcMetricsLayer)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// grpc_type, grpc_service, grpc_method of a call.
type Labels = (&'static str, &'static str, &'static str);

const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI_STREAM: &str = "bidi_stream";

/// Every method served on the client listeners, with its gRPC type.
const METHODS: &[(&str, &[(&str, &str)])] = &[
    (
        "etcdserverpb.KV",
        &[
            ("Range", UNARY),
            ("RangeStream", SERVER_STREAM),
            ("Put", UNARY),
            ("DeleteRange", UNARY),
            ("Txn", UNARY),
            ("Compact", UNARY),
        ],
    ),
    ("etcdserverpb.Watch", &[("Watch", BIDI_STREAM)]),
    (
        "etcdserverpb.Lease",
        &[
            ("LeaseGrant", UNARY),
            ("LeaseRevoke", UNARY),
            ("LeaseKeepAlive", BIDI_STREAM),
            ("LeaseTimeToLive", UNARY),
            ("LeaseLeases", UNARY),
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            ("MemberAdd", UNARY),
            ("MemberRemove", UNARY),
            ("MemberUpdate", UNARY),
            ("MemberList", UNARY),
            ("MemberPromote", UNARY),
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            ("Alarm", UNARY),
            ("Status", UNARY),
            ("Defragment", UNARY),
            ("Hash", UNARY),
            ("HashKV", UNARY),
            ("Snapshot", SERVER_STREAM),
            ("MoveLeader", UNARY),
            ("Downgrade", UNARY),
        ],
    ),
    (
        "etcdserverpb.Auth",
        &[
            ("AuthEnable", UNARY),
            ("AuthDisable", UNARY),
            ("AuthStatus", UNARY),
            ("Authenticate", UNARY),
            ("UserAdd", UNARY),
            ("UserGet", UNARY),
            ("UserList", UNARY),
            ("UserDelete", UNARY),
            ("UserChangePassword", UNARY),
            ("UserGrantRole", UNARY),
            ("UserRevokeRole", UNARY),
            ("RoleAdd", UNARY),
            ("RoleGet", UNARY),
            ("RoleList", UNARY),
            ("RoleDelete", UNARY),
            ("RoleGrantPermission", UNARY),
            ("RoleRevokePermission", UNARY),
        ],
    ),
    (
        "raftkinepb.Admin",
        &[
            ("AddNode", UNARY),
            ("RemoveNode", UNARY),
            ("ClusterStatus", UNARY),
        ],
    ),
    (
        "grpc.health.v1.Health",
        &[("Check", UNARY), ("Watch", SERVER_STREAM)],
    ),
];

/// The labels of a request path `/SERVICE/METHOD`, if raftkine serves that method.
fn classify(path: &str) -> Option<Labels> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (service, methods) = METHODS.iter().find(|(s, _)| *s == service)?;
    let (method, kind) = methods.iter().find(|(m, _)| *m == method)?;
    Some((kind, service, method))
}

/// grpc-go's name of a status code (`codes.Code.String()`).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// The code in a `grpc-status` header or trailer.
fn status_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(code_name(value.trim().parse().unwrap_or(2)))
}

/// A call not yet counted as handled; counted as `Canceled` if dropped unfinished.
struct Pending(Option<Labels>);

impl Pending {
    fn finish(&mut self, code: &str) {
        if let Some((kind, service, method)) = self.0.take() {
            metrics()
                .grpc_handled
                .with_label_values(&[kind, service, method, code])
                .inc();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let labels = classify(request.uri().path());
        if let Some((kind, service, method)) = labels {
            metrics()
                .grpc_started
                .with_label_values(&[kind, service, method])
                .inc();
        }
        CountedFuture {
            inner: self.inner.call(request),
            pending: Some(Pending(labels)),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcMetrics`].
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F, ResBody, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<CountedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        let mut pending = this.pending.take().unwrap_or(Pending(None));
        match outcome {
            Ok(response) => {
                // A trailers-only answer carries its status in the headers.
                if let Some(code) = status_code(response.headers()) {
                    pending.finish(code);
                }
                Poll::Ready(Ok(response.map(|inner| CountedBody { inner, pending })))
            }
            Err(e) => {
                pending.finish("Unknown");
                Poll::Ready(Err(e))
            }
        }
    }
}

pin_project! {
    /// A response body that counts its call as handled when the trailers go out.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        pending: Pending,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        match &frame {
            Some(Ok(f)) => {
                if let Some(code) = f.trailers_ref().and_then(status_code) {
                    this.pending.finish(code);
                }
            }
            Some(Err(_)) => this.pending.finish("Internal"),
            None => this.pending.finish("Unknown"),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_served_methods_only() {
        assert_eq!(
            classify("/etcdserverpb.KV/Range"),
            Some((UNARY, "etcdserverpb.KV", "Range"))
        );
        assert_eq!(
            classify("/etcdserverpb.Watch/Watch"),
            Some((BIDI_STREAM, "etcdserverpb.Watch", "Watch"))
        );
        assert_eq!(
            classify("/etcdserverpb.Maintenance/Snapshot"),
            Some((SERVER_STREAM, "etcdserverpb.Maintenance", "Snapshot"))
        );
        assert_eq!(classify("/etcdserverpb.KV/Nope"), None);
        assert_eq!(classify("/x.Y/Range"), None);
        assert_eq!(classify("/"), None);
        assert_eq!(code_name(8), "ResourceExhausted");
    }
}
