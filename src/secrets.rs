//! Where the REST shared secrets come from: the config file, a secret file, an
//! environment variable, or — when none is configured — a generated secret kept in a
//! 0600 file in the state directory (the only thing tarn ever writes to disk).
//!
//! Secrets never come from the command line alone: process lists leak.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::auth::Secret;
use crate::config::Config;

/// Name of the generated secret file inside the state directory.
pub const GENERATED_FILE: &str = "secret";

/// The secrets a configuration yields, and whether one was generated.
#[derive(Debug)]
pub struct Loaded {
    pub secrets: Vec<Secret>,
    /// Set when the secret came from (or was written to) the state directory.
    pub generated: Option<PathBuf>,
}

/// Reads every configured secret; with none configured, uses or creates the generated one.
pub fn load(config: &Config) -> Result<Loaded, String> {
    let auth = &config.auth;
    let mut secrets = Vec::new();
    for (i, s) in auth.secrets.iter().enumerate() {
        if s.is_empty() {
            return Err(format!("auth.secrets[{i}] is empty"));
        }
        secrets.push(Secret::new(s.as_bytes().to_vec()));
    }
    if let Some(path) = &auth.secret_file {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("auth.secret_file {}: {e}", path.display()))?;
        let before = secrets.len();
        secrets.extend(parse_secret_lines(&text));
        if secrets.len() == before {
            return Err(format!(
                "auth.secret_file {}: no secret in it",
                path.display()
            ));
        }
    }
    if let Some(name) = &auth.secret_env {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => {
                secrets.push(Secret::new(v.trim().as_bytes().to_vec()))
            }
            _ => {
                return Err(format!(
                    "auth.secret_env: variable {name} is unset or empty"
                ));
            }
        }
    }
    if !secrets.is_empty() {
        return Ok(Loaded {
            secrets,
            generated: None,
        });
    }
    let path = state_directory(config).join(GENERATED_FILE);
    let secret = read_or_generate(&path)?;
    Ok(Loaded {
        secrets: vec![secret],
        generated: Some(path),
    })
}

/// One secret per non-empty line; `#` starts a comment line.
fn parse_secret_lines(text: &str) -> impl Iterator<Item = Secret> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Secret::new(l.as_bytes().to_vec()))
}

/// `server.state_directory`, else `$STATE_DIRECTORY` (systemd), else the XDG state
/// directory, else `/var/lib/tarn`.
pub fn state_directory(config: &Config) -> PathBuf {
    if !config.server.state_directory.as_os_str().is_empty() {
        return config.server.state_directory.clone();
    }
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = dir.to_string_lossy().split(':').next()
        && !first.is_empty()
    {
        return PathBuf::from(first);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("tarn");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/tarn");
    }
    PathBuf::from("/var/lib/tarn")
}

fn read_or_generate(path: &Path) -> Result<Secret, String> {
    match fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(meta) = fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "generated secret file is readable by others; chmod 600 it");
            }
            return parse_secret_lines(&text)
                .next()
                .ok_or_else(|| format!("{}: no secret in it", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
    }
    let bytes: [u8; 32] = rand::random();
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(format!("{text}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a REST secret (no secret configured)");
    Ok(Secret::new(text.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tarn-secrets-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generated_secret_is_private_and_stable() {
        let dir = temp_dir("gen");
        let mut config = Config::embedded();
        config.server.state_directory = dir.clone();
        let first = load(&config).unwrap();
        let path = first.generated.clone().unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let second = load(&config).unwrap();
        assert_eq!(first.secrets[0].as_bytes(), second.secrets[0].as_bytes());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn all_sources_add_up() {
        let dir = temp_dir("src");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets");
        fs::write(&file, "# rotation\nold\n\nnew\n").unwrap();
        let mut config = Config::embedded();
        config.auth.secrets = vec!["inline".into()];
        config.auth.secret_file = Some(file);
        let loaded = load(&config).unwrap();
        let got: Vec<&[u8]> = loaded.secrets.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(got, vec![&b"inline"[..], b"old", b"new"]);
        assert!(loaded.generated.is_none());
        config.auth.secret_env = Some("TARN_TEST_SURELY_UNSET_VARIABLE".into());
        assert!(
            load(&config)
                .unwrap_err()
                .contains("TARN_TEST_SURELY_UNSET_VARIABLE")
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
