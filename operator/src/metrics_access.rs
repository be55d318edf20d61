//! Who may read `/metrics`, and over what: `--metrics-secure` serves it over TLS with the
//! `tls.crt`/`tls.key` of `--metrics-cert-dir` or, without one, a self-signed certificate made
//! at start-up; `--metrics-auth` requires a bearer token that the API server authenticates
//! (TokenReview) and authorises for `GET /metrics` (SubjectAccessReview), as
//! controller-runtime's `WithAuthenticationAndAuthorization` filter does. Decisions are cached
//! briefly so a scrape costs at most two API calls a minute per token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;

/// Why the metrics TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("--metrics-cert-dir: {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The self-signed certificate could not be generated.
    #[error("generating a self-signed metrics certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the certificate or key.
    #[error("metrics TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS server configuration for the metrics listener: `tls.crt` and `tls.key` from
/// `cert_dir`, or a fresh self-signed certificate for `localhost` when there is none.
pub fn tls_config(cert_dir: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = match cert_dir {
        Some(dir) => load(dir)?,
        None => {
            let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
            let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
            (vec![generated.cert.der().clone()], key)
        }
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load(dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let file_err = |path: &Path, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| file_err(&cert_path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(&cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(&cert_path, "no certificate found".to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_err(&key_path, e.to_string()))?;
    Ok((chain, key))
}

/// The outcome of an access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve the metrics.
    Allowed,
    /// No bearer token, or the API server does not accept it: 401.
    Unauthenticated,
    /// The token's user may not `GET /metrics`: 403.
    Forbidden,
    /// The API server could not be asked: 503, not cached.
    Unavailable,
}

/// How long an allow decision is reused.
const ALLOW_TTL: Duration = Duration::from_secs(60);
/// How long a deny decision is reused.
const DENY_TTL: Duration = Duration::from_secs(10);
/// Most tokens remembered at once (scrapers are few; the cache is cleared when full).
const CACHE_LIMIT: usize = 256;

/// Authenticates and authorises `/metrics` requests through the API server.
pub struct Authorizer {
    client: Client,
    cache: Mutex<HashMap<String, (Instant, Decision)>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer asking the API server behind `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    /// Decides on a request with this `Authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Decision {
        let Some(token) = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Decision::Unauthenticated;
        };
        if let Some(decision) = self.cached(token) {
            return decision;
        }
        let decision = match self.ask(token).await {
            Ok(decision) => decision,
            Err(error) => {
                tracing::warn!(%error, "cannot review a /metrics token");
                return Decision::Unavailable;
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(token.to_owned(), (Instant::now(), decision));
        }
        decision
    }

    fn cached(&self, token: &str) -> Option<Decision> {
        let cache = self.cache.lock().ok()?;
        let (at, decision) = cache.get(token)?;
        let ttl = if *decision == Decision::Allowed {
            ALLOW_TTL
        } else {
            DENY_TTL
        };
        (at.elapsed() < ttl).then_some(*decision)
    }

    async fn ask(&self, token: &str) -> Result<Decision, kube::Error> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = reviews.create(&PostParams::default(), &review).await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let access: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let question = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".to_owned()),
                    verb: Some("get".to_owned()),
                }),
                resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let answered = access.create(&PostParams::default(), &question).await?;
        Ok(if answered.status.is_some_and(|s| s.allowed) {
            Decision::Allowed
        } else {
            Decision::Forbidden
        })
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// Answers the next API call, checking its path; returns the request body.
    async fn answer(handle: &mut Handle, path: &str, response: Value) -> Value {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.uri().path(), path);
        let bytes = request
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&response).expect("json")))
                .expect("response"),
        );
        serde_json::from_slice(&bytes).expect("json body")
    }

    fn authorizer() -> (Authorizer, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Authorizer::new(Client::new(service, "default")), handle)
    }

    const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
    const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

    fn reviewed(authenticated: bool) -> Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
            "status": {"authenticated": authenticated,
                       "user": {"username": "system:serviceaccount:monitoring:prometheus",
                                "groups": ["system:serviceaccounts"]}}
        })
    }

    fn answered(allowed: bool) -> Value {
        json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {}, "status": {"allowed": allowed}
        })
    }

    #[tokio::test]
    async fn allowed_tokens_are_reviewed_then_cached() {
        let (authz, mut handle) = authorizer();
        let server = tokio::spawn(async move {
            let sent = answer(&mut handle, TOKEN_REVIEWS, reviewed(true)).await;
            assert_eq!(sent["spec"]["token"], "t0k3n");
            let asked = answer(&mut handle, ACCESS_REVIEWS, answered(true)).await;
            assert_eq!(
                asked["spec"]["user"],
                "system:serviceaccount:monitoring:prometheus"
            );
            assert_eq!(
                asked["spec"]["nonResourceAttributes"],
                json!({"path": "/metrics", "verb": "get"})
            );
            handle
        });
        assert_eq!(authz.check(Some("Bearer t0k3n")).await, Decision::Allowed);
        let _handle = server.await.expect("api answered");
        // Served from the cache: no API call (the mock would otherwise hang the test).
        assert_eq!(authz.check(Some("Bearer t0k3n")).await, Decision::Allowed);
    }

    #[tokio::test]
    async fn missing_rejected_and_unauthorised_tokens() {
        let (authz, mut handle) = authorizer();
        assert_eq!(authz.check(None).await, Decision::Unauthenticated);
        assert_eq!(
            authz.check(Some("Basic abc")).await,
            Decision::Unauthenticated
        );
        let server = tokio::spawn(async move {
            answer(&mut handle, TOKEN_REVIEWS, reviewed(false)).await;
            answer(&mut handle, TOKEN_REVIEWS, reviewed(true)).await;
            answer(&mut handle, ACCESS_REVIEWS, answered(false)).await;
            handle
        });
        assert_eq!(
            authz.check(Some("Bearer bad")).await,
            Decision::Unauthenticated
        );
        assert_eq!(authz.check(Some("Bearer weak")).await, Decision::Forbidden);
        let _handle = server.await.expect("api answered");
    }

    #[tokio::test]
    async fn api_errors_are_unavailable_and_not_cached() {
        let (authz, mut handle) = authorizer();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("request");
            send.send_error(std::io::Error::other("connection refused"));
            answer(&mut handle, TOKEN_REVIEWS, reviewed(true)).await;
            answer(&mut handle, ACCESS_REVIEWS, answered(true)).await;
            handle
        });
        assert_eq!(authz.check(Some("Bearer t")).await, Decision::Unavailable);
        assert_eq!(authz.check(Some("Bearer t")).await, Decision::Allowed);
        let _handle = server.await.expect("api answered");
    }

    #[test]
    fn self_signed_and_file_certificates_load() {
        assert!(tls_config(None).is_ok());
        let dir = tempfile::tempdir().expect("tempdir");
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        std::fs::write(dir.path().join("tls.crt"), generated.cert.pem()).expect("write");
        std::fs::write(
            dir.path().join("tls.key"),
            generated.signing_key.serialize_pem(),
        )
        .expect("write");
        assert!(tls_config(Some(dir.path())).is_ok());
        let empty = tempfile::tempdir().expect("tempdir");
        let err = tls_config(Some(empty.path())).expect_err("no files");
        assert!(err.to_string().starts_with("--metrics-cert-dir:"), "{err}");
    }
}
