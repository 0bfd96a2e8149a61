//! TLS for `turns:`: the certificate store, its reload, and the rustls configuration.
//!
//! The certificate and key live behind a resolver that every handshake asks, so a
//! reload swaps them for new handshakes while established connections (and their
//! allocations) carry on untouched. A reload happens on SIGHUP and when the files
//! change on disk: certbot renews by replacing files (often symlinks), so the store
//! polls a cheap fingerprint of both paths (resolved target, size, mtime, inode) and
//! loads only after the fingerprint has been stable for one interval, which debounces
//! the cert-then-key write sequence. A new pair that does not parse, or whose key does
//! not match the certificate, is refused with a log line and the old pair stays.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The current certificate and key, swappable at run time.
#[derive(Debug)]
pub struct CertStore {
    certificate: PathBuf,
    private_key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Fingerprint of the files the current pair was loaded from, and the last one seen.
    seen: Mutex<(Option<FileStamp>, Option<FileStamp>)>,
}

/// What identifies a version of the two files without reading them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp(Vec<(PathBuf, u64, i64, i64, u64)>);

fn stamp(paths: &[&Path]) -> Option<FileStamp> {
    let mut parts = Vec::with_capacity(paths.len());
    for path in paths {
        let target = fs::canonicalize(path).ok()?;
        let meta = fs::metadata(&target).ok()?;
        parts.push((
            target,
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino(),
        ));
    }
    Some(FileStamp(parts))
}

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("certificate and private key do not belong together: {0}")]
    Mismatch(String),
}

/// The crypto provider tarn uses (ring: small, no C toolchain beyond cc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| CertError::Certificate {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Certificate {
            path: cert.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| CertError::Mismatch(e.to_string()))
}

impl CertStore {
    /// Loads the pair; an error here stops start-up.
    pub fn load(certificate: PathBuf, private_key: PathBuf) -> Result<Arc<Self>, CertError> {
        let provider = provider();
        let files = stamp(&[&certificate, &private_key]);
        let pair = load_pair(&certificate, &private_key, &provider)?;
        Ok(Arc::new(Self {
            certificate,
            private_key,
            provider,
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new((files.clone(), files)),
        }))
    }

    /// Reloads now (SIGHUP). Returns whether the new pair is in use.
    pub fn reload(&self) -> bool {
        let files = stamp(&[&self.certificate, &self.private_key]);
        match load_pair(&self.certificate, &self.private_key, &self.provider) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = (files.clone(), files);
                tracing::info!(certificate = %self.certificate.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Remember the broken version so the poller does not retry it every tick.
                self.seen.lock().unwrap_or_else(|p| p.into_inner()).0 = files;
                tracing::error!(error = %e, "TLS certificate reload refused; the previous certificate stays in use");
                false
            }
        }
    }

    /// One poll of the files: reloads when they changed and have since been stable.
    pub fn poll(&self) {
        let now = stamp(&[&self.certificate, &self.private_key]);
        let reload = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let (loaded, last) = &mut *seen;
            let stable = now.is_some() && now == *last;
            let changed = now != *loaded;
            *last = now;
            stable && changed
        };
        if reload {
            self.reload();
        }
    }

    /// Polls forever every `interval` (run on the main runtime).
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.poll();
        }
    }

    /// The rustls server configuration that resolves through this store.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}
