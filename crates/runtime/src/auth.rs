//! Bearer-token authentication for gRPC, as a tower layer in front of every service.
//!
//! - The admin token may call everything.
//! - The read-only token may call methods whose name starts with `Get` or `List`; anything else
//!   answers `PERMISSION_DENIED`.
//! - The agent token (given to the network agents' DaemonSet hosts) may only call the netboot
//!   protocol (`xcat3.internal.v1.NetbootConfig`: follow the boot table, claim dynamic blocks,
//!   report discoveries); anything else answers `PERMISSION_DENIED`.
//! - No token, or a wrong one, answers `UNAUTHENTICATED`.
//! - Health checks and server reflection are open: Kubernetes probes cannot send headers, and the
//!   schema is public (it is in the repository).
//! - With `insecure`, everything is allowed; only for local development, and the server warns.
//!
//! Tokens are compared in constant time and never logged.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};
use xcat3_types::Secret;

/// The tokens a server accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub admin: Option<Secret>,
    pub readonly: Option<Secret>,
    /// The network agents' token: the netboot protocol only.
    pub agent: Option<Secret>,
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.admin.is_none() && self.readonly.is_none() && self.agent.is_none()
    }
}

/// The service the agent token may call.
pub const AGENT_SERVICE: &str = "/xcat3.internal.v1.NetbootConfig/";

/// What a request is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Admin,
    ReadOnly,
    Agent,
}

#[derive(Debug)]
struct Policy {
    tokens: Tokens,
    insecure: bool,
}

/// Paths that need no token.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Whether a gRPC path (`/pkg.Service/Method`) only reads.
pub fn is_read_only(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    method.starts_with("Get") || method.starts_with("List")
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

impl Policy {
    fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<(), tonic::Status> {
        if self.insecure || is_open(path) {
            return Ok(());
        }
        let token = authorization
            .and_then(|h| {
                h.strip_prefix(b"Bearer ")
                    .or_else(|| h.strip_prefix(b"bearer "))
            })
            .ok_or_else(|| {
                tonic::Status::unauthenticated(
                    "missing bearer token (authorization: Bearer <token>)",
                )
            })?;
        let matches = |s: &Option<Secret>| {
            s.as_ref()
                .is_some_and(|s| constant_time_eq(s.expose().as_bytes(), token))
        };
        let access = if matches(&self.tokens.admin) {
            Access::Admin
        } else if matches(&self.tokens.readonly) {
            Access::ReadOnly
        } else if matches(&self.tokens.agent) {
            Access::Agent
        } else {
            return Err(tonic::Status::unauthenticated("invalid bearer token"));
        };
        if access == Access::ReadOnly && !is_read_only(path) {
            return Err(tonic::Status::permission_denied(format!(
                "the read-only token cannot call {path}"
            )));
        }
        if access == Access::Agent && !path.starts_with(AGENT_SERVICE) {
            return Err(tonic::Status::permission_denied(format!(
                "the agent token cannot call {path}"
            )));
        }
        Ok(())
    }
}

/// The tower layer that enforces [`Tokens`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    policy: Arc<Policy>,
}

impl AuthLayer {
    pub fn new(tokens: Tokens, insecure: bool) -> Self {
        Self {
            policy: Arc::new(Policy { tokens, insecure }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match self.policy.check(req.uri().path(), auth) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                tracing::debug!(path = req.uri().path(), code = ?status.code(), "request refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            tokens: Tokens {
                admin: Some(Secret::new("adm")),
                readonly: Some(Secret::new("ro")),
                agent: Some(Secret::new("agt")),
            },
            insecure: false,
        }
    }

    #[test]
    fn tokens_and_methods() {
        let p = policy();
        let create = "/xcat3.v1.NodeService/CreateNodes";
        let get = "/xcat3.v1.NodeService/GetNodes";
        assert!(p.check(create, Some(b"Bearer adm")).is_ok());
        assert_eq!(
            p.check(create, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            p.check(create, Some(b"Bearer nope")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            p.check(create, Some(b"Bearer adm2")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            p.check(create, Some(b"Bearer ro")).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(p.check(get, Some(b"Bearer ro")).is_ok());
        assert!(p.check("/grpc.health.v1.Health/Check", None).is_ok());
        let open = Policy {
            insecure: true,
            ..policy()
        };
        assert!(open.check(create, None).is_ok());
    }

    #[test]
    fn the_agent_token_only_follows_the_boot_table() {
        let p = policy();
        for method in ["Watch", "Blocks", "ReportDiscovered"] {
            let path = format!("{AGENT_SERVICE}{method}");
            assert!(p.check(&path, Some(b"Bearer agt")).is_ok(), "{path}");
        }
        for path in [
            "/xcat3.v1.NodeService/GetNodes",
            "/xcat3.v1.NodeService/CreateNodes",
            "/xcat3.v1.PasswdService/ListPasswds",
            "/xcat3.internal.v1.Conductor/Run",
            "/xcat3.internal.v1.NetbootConfigX/Watch",
        ] {
            assert_eq!(
                p.check(path, Some(b"Bearer agt")).unwrap_err().code(),
                tonic::Code::PermissionDenied,
                "{path}"
            );
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}

/// The client side: a tonic interceptor that sends `authorization: Bearer <token>` on every call
/// (nothing when there is no token), and the caller's trace context (`traceparent`).
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&Secret>) -> Self {
        Bearer(token.and_then(|t| format!("Bearer {}", t.expose()).parse().ok()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        crate::trace_context::inject(req.metadata_mut());
        Ok(req)
    }
}
