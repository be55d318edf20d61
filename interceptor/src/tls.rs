//! The TLS proxy listener's server configuration (rustls, ring provider).
//!
//! Certificates: the default pair (`KEDA_HTTP_PROXY_TLS_CERT_PATH`/`_KEY_PATH`) plus every
//! pair found by walking the `KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS` directories recursively
//! (`X.crt` + `X.key`, or `X.pem` + `X-key.pem`; a certificate without its key is an error).
//! The certificate for a handshake is chosen by SNI: the first store certificate valid for
//! the name (exact or wildcard SAN, checked by webpki), else the default one. ALPN offers
//! `h2` and `http/1.1`; protocol versions, cipher suites and key-exchange groups follow the
//! `KEDA_HTTP_TLS_*` (or deprecated `KEDA_HTTP_PROXY_TLS_*`) settings, which
//! [`crate::upstream_tls`] applies to backend connections too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{Config, TlsVersion};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate in the store has no matching key file.
    #[error("certificate {0} has no key file")]
    MissingKey(PathBuf),
    /// No certificate at all.
    #[error(
        "no serving certificate: neither the default pair nor any cert-store pair could be loaded"
    )]
    NoCertificate,
    /// A setting names something rustls cannot do.
    #[error("{0}")]
    Setting(String),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider restricted to the configured cipher suites and curves (the listener's
/// and the backend connections' settings are the same).
pub fn provider(config: &Config) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    restrict_provider(&mut provider, config)?;
    Ok(provider)
}

/// The protocol versions between the configured minimum (default 1.2) and maximum (default
/// 1.3).
pub fn versions(config: &Config) -> Vec<&'static SupportedProtocolVersion> {
    let min = config.tls_min_version().unwrap_or(TlsVersion::Tls12);
    let max = config.tls_max_version().unwrap_or(TlsVersion::Tls13);
    let mut v = Vec::new();
    if min == TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    if max == TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    v
}

/// The certificates of the default pair and of every cert-store pair, best effort (what
/// cannot be read is left out; the listener reports it). Backend TLS trusts them, as
/// upstream does.
pub fn serving_certificates(config: &Config) -> Vec<CertificateDer<'static>> {
    let mut files = vec![config.proxy_tls_cert_path.clone()];
    for dir in config
        .proxy_tls_cert_store_paths
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        if let Ok(pairs) = find_pairs(Path::new(dir)) {
            files.extend(pairs.into_iter().map(|(cert, _)| cert));
        }
    }
    files
        .iter()
        .filter_map(|file| CertificateDer::pem_file_iter(file).ok())
        .flat_map(|certs| certs.filter_map(Result::ok))
        .collect()
}

/// Builds the server configuration of the TLS listener.
pub fn server_config(config: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider(config)?);

    let default = match load_pair(
        &config.proxy_tls_cert_path,
        &config.proxy_tls_key_path,
        &provider,
    ) {
        Ok(key) => Some(Arc::new(key)),
        Err(error) if config.proxy_tls_cert_store_paths.trim().is_empty() => return Err(error),
        Err(error) => {
            tracing::warn!(%error, "default TLS certificate not loaded; using the cert store only");
            None
        }
    };
    let mut store = Vec::new();
    for dir in config
        .proxy_tls_cert_store_paths
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        for (cert, key) in find_pairs(Path::new(dir))? {
            let certified = load_pair(&cert, &key, &provider)?;
            let Some(leaf) = certified.cert.first().cloned() else {
                continue;
            };
            store.push(StoreEntry {
                leaf,
                key: Arc::new(certified),
            });
        }
    }
    if default.is_none() && store.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let resolver = Arc::new(SniResolver {
        default,
        store,
        cache: Mutex::new(HashMap::new()),
    });

    let versions = versions(config);
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// Applies the cipher-suite and curve settings. TLS 1.3 suites are always kept (as Go does);
/// names rustls does not implement are logged and skipped; an unknown name is an error.
fn restrict_provider(provider: &mut CryptoProvider, config: &Config) -> Result<(), TlsError> {
    let suites = config
        .proxy_tls_cipher_suites
        .as_deref()
        .or(config.tls_cipher_suites.as_deref())
        .unwrap_or("");
    let wanted: Vec<String> = suites
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            // Go names ChaCha20 suites without the hash.
            if s.ends_with("_CHACHA20_POLY1305") {
                format!("{s}_SHA256")
            } else {
                s.to_owned()
            }
        })
        .collect();
    if !wanted.is_empty() {
        for name in &wanted {
            let known = provider
                .cipher_suites
                .iter()
                .any(|s| format!("{:?}", s.suite()) == *name);
            if !known {
                if name.starts_with("TLS_") {
                    tracing::warn!(suite = %name, "cipher suite not supported by rustls; ignored");
                } else {
                    return Err(TlsError::Setting(format!(
                        "invalid KEDA_HTTP_TLS_CIPHER_SUITES: unknown cipher suite {name:?}"
                    )));
                }
            }
        }
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13 || wanted.contains(&format!("{:?}", s.suite()))
        });
    }

    let curves = config
        .proxy_tls_curve_preferences
        .as_deref()
        .or(config.tls_curve_preferences.as_deref())
        .unwrap_or("");
    let mut groups = Vec::new();
    for name in curves.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let rustls_name = match name {
            "X25519" => "X25519",
            "CurveP256" | "P-256" => "secp256r1",
            "CurveP384" | "P-384" => "secp384r1",
            "CurveP521" | "P-521" | "X25519MLKEM768" => {
                tracing::warn!(curve = %name, "curve not supported by the ring provider; ignored");
                continue;
            }
            other => {
                return Err(TlsError::Setting(format!(
                    "invalid KEDA_HTTP_TLS_CURVE_PREFERENCES: unknown curve {other:?}"
                )));
            }
        };
        if let Some(group) = provider
            .kx_groups
            .iter()
            .find(|g| format!("{:?}", g.name()) == rustls_name)
        {
            groups.push(*group);
        }
    }
    if !groups.is_empty() {
        provider.kx_groups = groups;
    }
    Ok(())
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate in file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| file_error(key, e.to_string()))
}

/// Certificate/key pairs under `dir`, recursively, sorted by path.
fn find_pairs(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, TlsError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        let entries = std::fs::read_dir(&next).map_err(|e| TlsError::File {
            path: next.clone(),
            reason: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut pairs = Vec::new();
    for file in &files {
        let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let key = if let Some(stem) = name.strip_suffix(".crt") {
            file.with_file_name(format!("{stem}.key"))
        } else if let Some(stem) = name.strip_suffix(".pem") {
            if stem.ends_with("-key") {
                continue;
            }
            file.with_file_name(format!("{stem}-key.pem"))
        } else {
            continue;
        };
        if !key.is_file() {
            return Err(TlsError::MissingKey(file.clone()));
        }
        pairs.push((file.clone(), key));
    }
    Ok(pairs)
}

struct StoreEntry {
    leaf: CertificateDer<'static>,
    key: Arc<CertifiedKey>,
}

/// Picks a certificate by SNI; remembers the answer per name (bounded).
struct SniResolver {
    default: Option<Arc<CertifiedKey>>,
    store: Vec<StoreEntry>,
    cache: Mutex<HashMap<Box<str>, Option<usize>>>,
}

const SNI_CACHE_LIMIT: usize = 4096;

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("store", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    fn find(&self, name: &str) -> Option<usize> {
        let server_name = ServerName::try_from(name).ok()?;
        self.store.iter().position(|entry| {
            ParsedCertificate::try_from(&entry.leaf)
                .is_ok_and(|cert| rustls::client::verify_server_name(&cert, &server_name).is_ok())
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self
                .default
                .clone()
                .or_else(|| self.store.first().map(|e| Arc::clone(&e.key)));
        };
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied();
        let index = match cached {
            Some(index) => index,
            None => {
                let index = self.find(name);
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= SNI_CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(name.into(), index);
                index
            }
        };
        match index {
            Some(i) => self.store.get(i).map(|e| Arc::clone(&e.key)),
            None => self
                .default
                .clone()
                .or_else(|| self.store.first().map(|e| Arc::clone(&e.key))),
        }
    }
}
