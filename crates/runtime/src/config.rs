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

/// Makes every file this process creates from now on private to its user (0600, directories
/// 0700), whatever umask it was started with: the database, its WAL, the boot-table snapshot and
/// the lease log hold secrets. Called first thing by every service binary.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and its parents) if missing, and makes it and the regular files directly in it
/// private (0700 and 0600), so a data directory made by an earlier version, or by hand, stops
/// being readable by other users. What is private already is left untouched, so a directory the
/// image made private works on a read-only root file system.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create directory {}", dir.display()))?;
    set_mode(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            set_mode(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

/// Gives `path` permission bits `mode` unless it has them already.
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let now = std::fs::metadata(path)
        .with_context(|| format!("read the mode of {}", path.display()))?
        .permissions()
        .mode();
    if now & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("make {} private ({mode:04o})", path.display()))?;
    }
    Ok(())
}

/// Makes an SQLite database file named by `url` and its WAL and shared-memory files private
/// (0600) if they exist; other URLs are left alone. New files are private through the umask.
pub fn private_sqlite_files(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{path}{suffix}"));
        if file.is_file() {
            set_mode(&file, 0o600)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (a temporary file, created 0600, renamed over it).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// The SQLite database under `data_dir` (created if missing, private to this user).
pub fn sqlite_url(data_dir: &Path) -> anyhow::Result<String> {
    private_dir(data_dir)?;
    Ok(format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("xcat3.db").display()
    ))
}

/// The shortest token accepted, from a file or the environment.
pub const MIN_TOKEN_LEN: usize = 16;

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
        None => match env.get(var).map(|t| t.trim()).filter(|t| !t.is_empty()) {
            Some(t) if t.len() < MIN_TOKEN_LEN => anyhow::bail!(
                "{var} is shorter than {MIN_TOKEN_LEN} characters: use a long random token"
            ),
            t => Ok(t.map(Secret::new)),
        },
    }
}

/// Reads the admin token from `path`, creating it (mode 0600, 32 random bytes in hex) if missing.
pub fn generated_token(path: &Path) -> anyhow::Result<Secret> {
    if path.exists() {
        return read_token(path);
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
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

/// Where the keys that seal stored secrets (BMC passwords and keys, credential hashes) come from.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SecretsArgs {
    /// File holding the key (64 hex digits: `openssl rand -hex 32`) that secrets are encrypted
    /// with in the database; without it they are stored as given.
    #[arg(long, env = "XCAT3_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Earlier keys, comma-separated: still read while `xcat3-server reseal-secrets` moves every
    /// secret to the current key (rotation).
    #[arg(
        long,
        env = "XCAT3_SECRETS_PREVIOUS_KEY_FILES",
        value_delimiter = ',',
        requires = "secrets_key_file"
    )]
    pub secrets_previous_key_files: Vec<PathBuf>,
}
