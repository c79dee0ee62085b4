//! Configuration helpers every service binary shares: the data directory, token files, and the
//! all-in-one server's generated admin token.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use xcat3_types::Secret;

/// `/var/lib/xcat3` for root, `~/.local/share/xcat3` for anyone else.
pub fn default_data_dir(env: &HashMap<String, String>) -> PathBuf {
    let root = env.get("USER").is_some_and(|u| u == "root")
        || env.get("HOME").is_some_and(|h| h == "/root");
    match env.get("HOME") {
        Some(home) if !root => Path::new(home).join(".local/share/xcat3"),
        _ => PathBuf::from("/var/lib/xcat3"),
    }
}

/// The SQLite database under `data_dir` (created if missing).
pub fn sqlite_url(data_dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    Ok(format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("xcat3.db").display()
    ))
}

/// Reads a token file (at least 16 characters once trimmed).
pub fn read_token(path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        token.len() >= 16,
        "token in {} is shorter than 16 characters",
        path.display()
    );
    Ok(Secret::new(token))
}

/// A token from a file if given, else from the environment variable `var`.
pub fn token_from(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    var: &str,
) -> anyhow::Result<Option<Secret>> {
    match file {
        Some(path) => read_token(path).map(Some),
        None => Ok(env.get(var).filter(|t| !t.is_empty()).map(Secret::new)),
    }
}

/// Reads the admin token from `path`, creating it (mode 0600, 32 random bytes in hex) if missing.
pub fn generated_token(path: &Path) -> anyhow::Result<Secret> {
    if path.exists() {
        return read_token(path);
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let token = random_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok(Secret::new(token))
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A fresh secret: 32 random bytes, hex (admin tokens, deploy callback tokens).
pub fn random_token() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    xcat3_types::hex(&bytes)
}

/// A listen address flag that may be `none` (the service is off); `what` names the flag in errors.
pub fn optional_addr(what: &str, v: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if v == "none" {
        return Ok(None);
    }
    let addr = v
        .parse()
        .with_context(|| format!("{what}: {v:?} is not an address (or \"none\")"))?;
    Ok(Some(addr))
}
