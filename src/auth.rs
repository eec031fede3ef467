//! Bearer-token authentication and scope authorisation, shared by REST and
//! gRPC (each adapter only extracts the `authorization` header and maps
//! [`Denied`] to its own status).
//!
//! Off unless at least one token is configured. A token carries scopes:
//! `infer` (inference and metadata) and `admin` (the repository API and log
//! settings); `admin` implies `infer`, whether the token comes from a flag
//! or from the token file. Health
//! and metrics stay open unless `protect_health` / `protect_metrics` is set,
//! and then any valid token opens them.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time
//! against every configured digest (no early exit), so neither the content
//! nor the length of a token leaks through timing. They are never logged:
//! [`Secret`] redacts itself in `Debug` and `Display`.
//!
//! The token file is re-read by [`Auth::reload`] (the server polls it): a
//! rotated token works without a restart, and a file that no longer parses
//! leaves the previous tokens in force.

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// A string that never shows itself in logs or printed config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scopes {
    pub(crate) infer: bool,
    pub(crate) admin: bool,
}

impl Scopes {
    pub(crate) const INFER: Scopes = Scopes {
        infer: true,
        admin: false,
    };
    pub const ALL: Scopes = Scopes {
        infer: true,
        admin: true,
    };
}

/// What a request wants to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Liveness and readiness probes.
    Health,
    /// Prometheus `/metrics`.
    Metrics,
    /// Inference, metadata, statistics, model configuration.
    Infer,
    /// The repository API (index, load, unload).
    Admin,
}

/// Why a request was refused. Messages say what is missing and nothing about
/// which tokens exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token, a malformed header, or a token that matches none (401).
    Unauthenticated,
    /// A valid token without the scope this request needs (403).
    Forbidden(&'static str),
}

impl Denied {
    /// The `reason` label of `sluice_refused_requests_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Denied::Unauthenticated => "unauthenticated",
            Denied::Forbidden(_) => "forbidden",
        }
    }

    pub(crate) fn message(self) -> String {
        match self {
            Denied::Unauthenticated => {
                "authentication required: send 'authorization: Bearer <token>'".into()
            }
            Denied::Forbidden(scope) => format!("this token lacks the '{scope}' scope"),
        }
    }
}

impl From<Denied> for crate::error::Error {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated => Self::Unauthenticated(denied.message()),
            Denied::Forbidden(_) => Self::PermissionDenied(denied.message()),
        }
    }
}

/// How tokens are configured (flags, env, file).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Tokens with the `infer` scope.
    pub infer_tokens: Vec<Secret>,
    /// Tokens with both scopes.
    pub admin_tokens: Vec<Secret>,
    /// A file of `<scopes> <token>` lines, re-read on change.
    pub(crate) token_file: Option<PathBuf>,
    pub protect_health: bool,
    pub protect_metrics: bool,
}

impl AuthConfig {
    pub(crate) fn enabled(&self) -> bool {
        !self.infer_tokens.is_empty() || !self.admin_tokens.is_empty() || self.token_file.is_some()
    }
}

type Digest32 = [u8; 32];

fn digest(token: &[u8]) -> Digest32 {
    Sha256::digest(token).into()
}

/// The live token set; cheap to clone (`Arc`).
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AuthConfig,
    /// Digests from flags and env, fixed for the process.
    fixed: Vec<(Digest32, Scopes)>,
    /// Digests from the token file, replaced whole on reload.
    from_file: ArcSwap<Vec<(Digest32, Scopes)>>,
    /// Hash of the file's last loaded content, to reload only on change.
    file_hash: Mutex<Option<u64>>,
}

impl Auth {
    /// Builds the token set; `None` when authentication is off.
    pub fn new(config: AuthConfig) -> anyhow::Result<Option<Auth>> {
        if !config.enabled() {
            return Ok(None);
        }
        let mut fixed = Vec::new();
        for t in &config.infer_tokens {
            fixed.push((
                checked_digest(t.expose(), "--auth-infer-token")?,
                Scopes::INFER,
            ));
        }
        for t in &config.admin_tokens {
            fixed.push((
                checked_digest(t.expose(), "--auth-admin-token")?,
                Scopes::ALL,
            ));
        }
        let (from_file, file_hash) = match &config.token_file {
            Some(path) => {
                let (tokens, hash) = read_token_file(path)?;
                (tokens, Some(hash))
            }
            None => (Vec::new(), None),
        };
        if fixed.is_empty() && from_file.is_empty() {
            anyhow::bail!("authentication is on but no token is configured");
        }
        Ok(Some(Auth {
            inner: Arc::new(Inner {
                config,
                fixed,
                from_file: ArcSwap::from_pointee(from_file),
                file_hash: Mutex::new(file_hash),
            }),
        }))
    }

    /// Re-reads the token file if its content changed. On a parse error the
    /// previous tokens stay in force and the error is returned for logging.
    pub(crate) fn reload(&self) -> anyhow::Result<bool> {
        let Some(path) = &self.inner.config.token_file else {
            return Ok(false);
        };
        let content = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", path.display()))?;
        let hash = xxhash_rust::xxh3::xxh3_64(&content);
        let mut last = self
            .inner
            .file_hash
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *last == Some(hash) {
            return Ok(false);
        }
        let tokens = parse_token_file(&content, path)?;
        self.inner.from_file.store(Arc::new(tokens));
        *last = Some(hash);
        Ok(true)
    }

    /// Checks the raw `authorization` header value against what `access` needs.
    pub(crate) fn check(&self, authorization: Option<&[u8]>, access: Access) -> Result<(), Denied> {
        let open = match access {
            Access::Health => !self.inner.config.protect_health,
            Access::Metrics => !self.inner.config.protect_metrics,
            Access::Infer | Access::Admin => false,
        };
        if open {
            return Ok(());
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(Denied::Unauthenticated)?;
        let scopes = self.lookup(token).ok_or(Denied::Unauthenticated)?;
        match access {
            Access::Health | Access::Metrics => Ok(()),
            // `admin` implies `infer`, for flag and file tokens alike.
            Access::Infer if scopes.infer || scopes.admin => Ok(()),
            Access::Infer => Err(Denied::Forbidden("infer")),
            Access::Admin if scopes.admin => Ok(()),
            Access::Admin => Err(Denied::Forbidden("admin")),
        }
    }

    /// The union of the scopes of every configured token equal to `token`,
    /// comparing every digest in constant time.
    fn lookup(&self, token: &[u8]) -> Option<Scopes> {
        let presented = digest(token);
        let file = self.inner.from_file.load();
        let mut found = subtle::Choice::from(0);
        let (mut infer, mut admin) = (subtle::Choice::from(0), subtle::Choice::from(0));
        for (d, scopes) in self.inner.fixed.iter().chain(file.iter()) {
            let eq = d.ct_eq(&presented);
            found |= eq;
            infer |= eq & subtle::Choice::from(u8::from(scopes.infer));
            admin |= eq & subtle::Choice::from(u8::from(scopes.admin));
        }
        bool::from(found).then(|| Scopes {
            infer: infer.into(),
            admin: admin.into(),
        })
    }
}

/// `Bearer <token>` (scheme case-insensitive) → the token bytes.
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (rest.first().is_some_and(u8::is_ascii_whitespace) && !token.is_empty()).then_some(token)
}

fn checked_digest(token: &str, what: &str) -> anyhow::Result<Digest32> {
    if token.len() < 16
        || token
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        anyhow::bail!(
            "{what}: a token must be at least 16 characters with no spaces or control characters"
        );
    }
    Ok(digest(token.as_bytes()))
}

fn read_token_file(path: &Path) -> anyhow::Result<(Vec<(Digest32, Scopes)>, u64)> {
    let content = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", path.display()))?;
    let tokens = parse_token_file(&content, path)?;
    Ok((tokens, xxhash_rust::xxh3::xxh3_64(&content)))
}

/// Lines of `<scopes> <token>`, where scopes is `infer`, `admin` or
/// `infer,admin`; blank lines and `#` comments are skipped. Errors name the
/// line but never echo a token.
fn parse_token_file(content: &[u8], path: &Path) -> anyhow::Result<Vec<(Digest32, Scopes)>> {
    let text = std::str::from_utf8(content)
        .map_err(|_| anyhow::anyhow!("token file {} is not UTF-8", path.display()))?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("token file {} line {}", path.display(), n + 1);
        let mut parts = line.split_whitespace();
        let (Some(scopes), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("{}: expected '<scopes> <token>'", at());
        };
        let mut s = Scopes {
            infer: false,
            admin: false,
        };
        for scope in scopes.split(',') {
            match scope {
                "infer" => s.infer = true,
                "admin" => s.admin = true,
                other => anyhow::bail!(
                    "{}: unknown scope '{other}'; expected infer, admin or infer,admin",
                    at()
                ),
            }
        }
        tokens.push((checked_digest(token, &at())?, s));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const INFER: &str = "infer-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn auth(protect_health: bool) -> Auth {
        Auth::new(AuthConfig {
            infer_tokens: vec![INFER.parse().unwrap()],
            admin_tokens: vec![ADMIN.parse().unwrap()],
            token_file: None,
            protect_health,
            protect_metrics: false,
        })
        .unwrap()
        .unwrap()
    }

    fn header(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn off_without_tokens() {
        assert!(Auth::new(AuthConfig::default()).unwrap().is_none());
    }

    #[test]
    fn scopes_decide() {
        let a = auth(false);
        assert_eq!(a.check(None, Access::Health), Ok(()));
        assert_eq!(a.check(None, Access::Metrics), Ok(()));
        assert_eq!(a.check(None, Access::Infer), Err(Denied::Unauthenticated));
        assert_eq!(
            a.check(Some(&header("wrong-token-0123456789")), Access::Infer),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(a.check(Some(&header(INFER)), Access::Infer), Ok(()));
        assert_eq!(
            a.check(Some(&header(INFER)), Access::Admin),
            Err(Denied::Forbidden("admin"))
        );
        assert_eq!(a.check(Some(&header(ADMIN)), Access::Admin), Ok(()));
        assert_eq!(a.check(Some(&header(ADMIN)), Access::Infer), Ok(()));
        assert_eq!(
            a.check(Some(format!("bearer   {INFER} ").as_bytes()), Access::Infer),
            Ok(())
        );
        for bad in ["Basic abc", "Bearer", "Bearer ", INFER, "Bearerx y"] {
            assert_eq!(
                a.check(Some(bad.as_bytes()), Access::Infer),
                Err(Denied::Unauthenticated),
                "{bad}"
            );
        }
    }

    #[test]
    fn protected_health_needs_any_valid_token() {
        let a = auth(true);
        assert_eq!(a.check(None, Access::Health), Err(Denied::Unauthenticated));
        assert_eq!(a.check(Some(&header(INFER)), Access::Health), Ok(()));
    }

    #[test]
    fn secrets_are_redacted() {
        let c = AuthConfig {
            infer_tokens: vec![INFER.parse().unwrap()],
            ..Default::default()
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains(INFER), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn token_file_parses_reloads_and_keeps_old_tokens_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            format!("# ops\ninfer {INFER}\n\ninfer,admin {ADMIN}\n"),
        )
        .unwrap();
        let a = Auth::new(AuthConfig {
            token_file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(a.check(Some(&header(ADMIN)), Access::Admin), Ok(()));
        assert!(!a.reload().unwrap(), "unchanged file is not reloaded");

        let rotated = "rotated-token-0123456789";
        std::fs::write(&path, format!("infer {rotated}\n")).unwrap();
        assert!(a.reload().unwrap());
        assert_eq!(a.check(Some(&header(rotated)), Access::Infer), Ok(()));
        assert_eq!(
            a.check(Some(&header(INFER)), Access::Infer),
            Err(Denied::Unauthenticated)
        );

        std::fs::write(&path, "superuser short\n").unwrap();
        let err = a.reload().unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("short"), "{err}");
        assert_eq!(a.check(Some(&header(rotated)), Access::Infer), Ok(()));
    }

    #[test]
    fn short_tokens_are_refused_at_start() {
        let err = Auth::new(AuthConfig {
            infer_tokens: vec!["short".parse().unwrap()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--auth-infer-token") && !err.contains("short "),
            "{err}"
        );
    }

    #[test]
    fn admin_implies_infer_for_file_tokens_too() {
        let dir = std::env::temp_dir().join(format!("sluice-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "admin admin-only-token-0123456789\n").unwrap();
        let auth = Auth::new(AuthConfig {
            token_file: Some(file),
            ..AuthConfig::default()
        })
        .unwrap()
        .unwrap();
        let header = b"Bearer admin-only-token-0123456789";
        assert_eq!(auth.check(Some(header), Access::Infer), Ok(()));
        assert_eq!(auth.check(Some(header), Access::Admin), Ok(()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
