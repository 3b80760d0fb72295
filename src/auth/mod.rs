//! JWT verification (SPEC §3) and minting for the `token` subcommand.
//!
//! Keys come from `JWT_SECRET` (HS256; `JWT_SECRET_KEY`, the seed's name,
//! is an alias), `JWT_PUBLIC_KEY_PEM` (RS256 or ES256) or `JWT_JWKS_URL`
//! (an identity provider's rotating keys, [`jwks`]). With none, dev mode: a
//! random HS256 secret is generated once into `DATA_DIR` and reused, so
//! `token` and `serve` agree. The algorithm a token may use follows from
//! the key mode (and, with a JWKS, from the key its `kid` names), never
//! from the token's header.

pub mod jwks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::{TenantId, UserId, Username, now_millis};
use crate::settings::{Settings, TokenArgs};

/// File in `DATA_DIR` holding the dev-mode secret.
pub const DEV_SECRET_FILE: &str = "dev-jwt-secret";

/// The caller, as a verified token names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub username: Option<Username>,
    pub roles: Vec<String>,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// One of the platform's own services (the `service` role): it may
    /// report blocks and fair-play restrictions, nothing an admin only may.
    pub fn is_service(&self) -> bool {
        self.roles.iter().any(|r| r == "service")
    }
}

/// The claims this service reads and the `token` subcommand writes. The
/// user is `sub`, else `user_id` (the seed's account service); a token
/// without `tenant_id` belongs to `DEFAULT_TENANT`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// `aud`: one audience or several (RFC 7519 §4.1.3); which one must be
/// there is checked by the validation, this only reads either shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Longest bearer token read at all: a real one is well under 2 KB, and a
/// bigger one is refused before any decoding (bounded work).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. Logged, never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Config(String),
    #[error("dev secret in {path}: {source}")]
    DevSecret {
        path: String,
        source: std::io::Error,
    },
}

/// Where verification keys come from.
enum Keys {
    /// One key (a secret or a PEM public key) and its one algorithm.
    Fixed(Arc<jwks::Key>),
    /// An identity provider's key set, by `kid`.
    Jwks(Arc<jwks::Jwks>),
}

/// Verifies tokens; mints them when the key is a shared secret.
pub struct JwtAuth {
    keys: Keys,
    encoding: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    default_tenant: TenantId,
    max_lifetime_seconds: Option<u64>,
    dev_mode: bool,
}

impl JwtAuth {
    /// Keys from the settings (dev secret created in `DATA_DIR` if needed).
    pub fn from_settings(settings: &Settings) -> Result<Self, KeyError> {
        let default_tenant = TenantId::parse(&settings.default_tenant)
            .map_err(|e| KeyError::Config(format!("DEFAULT_TENANT: {}", e.reason)))?;
        let mut template = Validation::new(Algorithm::HS256);
        template.leeway = settings.jwt_leeway_seconds;
        template.validate_nbf = true;
        let mut required = vec!["exp"];
        required.extend(settings.jwt_issuer.as_ref().map(|_| "iss"));
        required.extend(settings.jwt_audience.as_ref().map(|_| "aud"));
        template.set_required_spec_claims(&required);
        match &settings.jwt_issuer {
            Some(iss) => template.set_issuer(&[iss]),
            None => template.iss = None,
        }
        match &settings.jwt_audience {
            Some(aud) => template.set_audience(&[aud]),
            None => template.validate_aud = false,
        }
        let fixed = |decoding: DecodingKey, algorithm: Algorithm| {
            let mut validation = template.clone();
            validation.algorithms = vec![algorithm];
            Keys::Fixed(Arc::new(jwks::Key {
                decoding,
                validation,
            }))
        };
        let (keys, encoding, dev_mode) = if let Some((name, secret)) = settings.hs256_secret() {
            if secret.len() < 32 {
                return Err(KeyError::Config(format!(
                    "{name} must be at least 32 bytes; make one with `openssl rand -hex 32`"
                )));
            }
            let bytes = secret.as_bytes();
            (
                fixed(DecodingKey::from_secret(bytes), Algorithm::HS256),
                Some(EncodingKey::from_secret(bytes)),
                false,
            )
        } else if let Some(pem) = &settings.jwt_public_key_pem {
            let pem = pem.replace("\\n", "\n");
            if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                (fixed(key, Algorithm::RS256), None, false)
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                (fixed(key, Algorithm::ES256), None, false)
            } else {
                return Err(KeyError::Config(
                    "JWT_PUBLIC_KEY_PEM is neither an RSA nor an EC (P-256) public key in PEM"
                        .into(),
                ));
            }
        } else if let Some(url) = &settings.jwt_jwks_url {
            crate::settings::http_base(url, "JWT_JWKS_URL").map_err(KeyError::Config)?;
            let jwks = jwks::Jwks::new(
                url.clone(),
                Duration::from_secs_f64(settings.jwt_jwks_ttl_seconds.max(1.0)),
                Duration::from_secs_f64(settings.jwt_jwks_min_refresh_seconds.max(0.0)),
                template.clone(),
            );
            (Keys::Jwks(Arc::new(jwks)), None, false)
        } else {
            let secret = dev_secret(&settings.data_dir)?;
            (
                fixed(DecodingKey::from_secret(&secret), Algorithm::HS256),
                Some(EncodingKey::from_secret(&secret)),
                true,
            )
        };
        Ok(Self {
            keys,
            encoding,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            default_tenant,
            max_lifetime_seconds: settings.jwt_max_lifetime_seconds,
            dev_mode,
        })
    }

    /// Whether these settings name no key, so the generated dev secret in
    /// DATA_DIR is used.
    pub fn uses_dev_secret(settings: &Settings) -> bool {
        settings.hs256_secret().is_none()
            && settings.jwt_public_key_pem.is_none()
            && settings.jwt_jwks_url.is_none()
    }

    /// The signing keys of the `token` subcommand: as the server's, but in
    /// dev mode the dev secret must already exist (the server creates it):
    /// a token signed with a fresh one, made in the wrong DATA_DIR, would
    /// never be accepted.
    pub fn for_minting(settings: &Settings) -> Result<Self, KeyError> {
        if Self::uses_dev_secret(settings) {
            let path = settings.data_dir.join(DEV_SECRET_FILE);
            if !path.is_file() {
                return Err(KeyError::Config(format!(
                    "no dev secret at {}: start the server with this DATA_DIR first (it makes \
                     one), or set JWT_SECRET",
                    std::path::absolute(&path).unwrap_or(path.clone()).display()
                )));
            }
        }
        Self::from_settings(settings)
    }

    /// True when running on a generated secret: fine on a laptop only.
    pub fn dev_mode(&self) -> bool {
        self.dev_mode
    }

    /// Reads the keys a JWKS mode needs before serving; a node that cannot
    /// read them does not start. Nothing to do in the other modes.
    pub async fn load_keys(&self) -> Result<(), KeyError> {
        match &self.keys {
            Keys::Fixed(_) => Ok(()),
            Keys::Jwks(jwks) => jwks.refresh().await.map(|_| ()).map_err(KeyError::Config),
        }
    }

    /// Verifies a bearer token with the keys in hand and reads the caller
    /// from it.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        bounded(token)?;
        match &self.keys {
            Keys::Fixed(key) => self.check(token, key),
            Keys::Jwks(jwks) => {
                let key = jwks.key(kid(token)?.as_deref()).ok_or_else(unknown_kid)?;
                self.check(token, &key)
            }
        }
    }

    /// As [`Self::verify`]; with a JWKS, a `kid` not in hand makes the key
    /// set be read again first (at most once per minimum interval).
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        match &self.keys {
            Keys::Fixed(_) => self.verify(token),
            Keys::Jwks(jwks) => {
                bounded(token)?;
                let key = jwks
                    .key_or_refresh(kid(token)?.as_deref())
                    .await
                    .ok_or_else(unknown_kid)?;
                self.check(token, &key)
            }
        }
    }

    fn check(&self, token: &str, key: &jwks::Key) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        // RFC 7515 §4.1.11: extensions marked critical must be understood,
        // and this service understands none.
        if data.header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(AuthError::Invalid("critical header extensions".into()));
        }
        let claims = data.claims;
        if let Some(max) = self.max_lifetime_seconds {
            let from = claims
                .iat
                .unwrap_or_else(|| (now_millis() / 1000).max(0) as u64);
            if claims.exp.saturating_sub(from) > max {
                return Err(AuthError::Invalid(format!(
                    "token lives longer than JWT_MAX_LIFETIME_SECONDS ({max})"
                )));
            }
        }
        let user = claims
            .sub
            .as_deref()
            .or(claims.user_id.as_deref())
            .ok_or_else(|| AuthError::Invalid("neither sub nor user_id".into()))?;
        let user_id = UserId::parse(user).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let tenant_id = match claims.tenant_id.as_deref() {
            Some(tenant) => {
                TenantId::parse(tenant).map_err(|e| AuthError::Invalid(e.to_string()))?
            }
            None => self.default_tenant.clone(),
        };
        let username = claims
            .preferred_username
            .as_deref()
            .or(claims.username.as_deref())
            .and_then(Username::sanitize);
        Ok(Identity {
            tenant_id,
            user_id,
            username,
            roles: claims.roles,
        })
    }

    /// Mints a token (HS256 keys only), with the configured issuer and
    /// audience so it passes verification.
    pub fn mint(&self, args: &TokenArgs) -> Result<String, KeyError> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            KeyError::Config(
                "tokens can only be minted with an HS256 secret (JWT_SECRET or dev mode)".into(),
            )
        })?;
        UserId::parse(&args.user).map_err(|e| KeyError::Config(e.to_string()))?;
        let tenant = match &args.tenant {
            Some(t) => TenantId::parse(t).map_err(|e| KeyError::Config(e.to_string()))?,
            None => self.default_tenant.clone(),
        };
        let now = (now_millis() / 1000) as u64;
        let claims = Claims {
            sub: Some(args.user.clone()),
            user_id: None,
            exp: now + args.ttl,
            iat: Some(now),
            tenant_id: Some(tenant.to_string()),
            preferred_username: args.username.clone(),
            username: None,
            roles: args.roles.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| KeyError::Config(format!("cannot sign token: {e}")))
    }
}

/// Refuses a token too long to be real before any decoding.
fn bounded(token: &str) -> Result<(), AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid(format!(
            "token longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The `kid` of a token's header (read, not trusted: it only picks a key).
fn kid(token: &str) -> Result<Option<String>, AuthError> {
    jsonwebtoken::decode_header(token)
        .map(|h| h.kid)
        .map_err(|e| AuthError::Invalid(e.to_string()))
}

fn unknown_kid() -> AuthError {
    AuthError::Invalid("no key for this kid".into())
}

/// Reads the dev secret from `data_dir`, creating it (0600) on first use.
fn dev_secret(data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = data_dir.join(DEV_SECRET_FILE);
    let err = |source| KeyError::DevSecret {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(hex) if hex.trim().len() >= 64 => return Ok(hex.trim().as_bytes().to_vec()),
        Ok(_) | Err(_) => {}
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &hex).map_err(err)?;
    // Another process may have won the race to create it: use what is there.
    let stored = std::fs::read_to_string(&path).map_err(err)?;
    Ok(stored.trim().as_bytes().to_vec())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut f) => f.write_all(contents.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        let mut s = Settings::from_env();
        s.data_dir = dir.to_path_buf();
        s.jwt_secret = None;
        s.jwt_secret_key = None;
        s.jwt_public_key_pem = None;
        s.jwt_jwks_url = None;
        s.jwt_issuer = None;
        s.jwt_audience = None;
        s
    }

    fn args(user: &str) -> TokenArgs {
        TokenArgs {
            user: user.into(),
            tenant: Some("t1".into()),
            username: Some("Alice".into()),
            roles: vec!["admin".into()],
            ttl: 60,
        }
    }

    #[test]
    fn dev_mode_secret_is_created_once_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let a = JwtAuth::from_settings(&settings(dir.path())).unwrap();
        let b = JwtAuth::from_settings(&settings(dir.path())).unwrap();
        assert!(a.dev_mode());
        let token = a.mint(&args("alice")).unwrap();
        let who = b.verify(&token).unwrap();
        assert_eq!(who.user_id.as_str(), "alice");
        assert_eq!(who.tenant_id.as_str(), "t1");
        assert_eq!(who.username.unwrap().as_str(), "Alice");
        assert!(who.roles.contains(&"admin".to_string()));
    }

    #[test]
    fn a_token_of_another_secret_or_issuer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.jwt_secret = Some("x".repeat(32));
        let ours = JwtAuth::from_settings(&s).unwrap();
        s.jwt_secret = Some("y".repeat(32));
        let theirs = JwtAuth::from_settings(&s).unwrap();
        assert!(ours.verify(&theirs.mint(&args("a")).unwrap()).is_err());
        s.jwt_secret = Some("x".repeat(32));
        s.jwt_issuer = Some("https://issuer".into());
        let strict = JwtAuth::from_settings(&s).unwrap();
        assert!(strict.verify(&ours.mint(&args("a")).unwrap()).is_err());
        assert!(strict.verify(&strict.mint(&args("a")).unwrap()).is_ok());
    }

    #[test]
    fn short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.jwt_secret = Some("short".into());
        let refused = JwtAuth::from_settings(&s).err().unwrap().to_string();
        assert!(
            refused.contains("JWT_SECRET must be at least 32 bytes"),
            "{refused}"
        );
        assert!(refused.contains("openssl rand -hex 32"), "{refused}");
        s.jwt_secret = None;
        s.jwt_secret_key = Some("short".into());
        let refused = JwtAuth::from_settings(&s).err().unwrap().to_string();
        assert!(refused.contains("JWT_SECRET_KEY must be"), "{refused}");
    }

    #[test]
    fn the_seeds_secret_name_is_an_alias_and_two_different_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.jwt_secret = Some("x".repeat(32));
        let minter = JwtAuth::from_settings(&s).unwrap();
        s.jwt_secret = None;
        s.jwt_secret_key = Some("x".repeat(32));
        let seed = JwtAuth::from_settings(&s).unwrap();
        assert!(!seed.dev_mode());
        assert!(seed.verify(&minter.mint(&args("a")).unwrap()).is_ok());
        s.jwt_secret = Some("x".repeat(32));
        assert_eq!(s.validate(), Ok(()), "the same value under both names");
        s.jwt_secret = Some("y".repeat(32));
        let refused = s.validate().unwrap_err();
        assert!(refused.contains("JWT_SECRET_KEY"), "{refused}");
    }

    #[test]
    fn the_user_is_sub_else_user_id_and_the_tenant_defaults_to_default_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.jwt_secret = Some("x".repeat(32));
        let auth = JwtAuth::from_settings(&s).unwrap();
        let key = EncodingKey::from_secret("x".repeat(32).as_bytes());
        let exp = now_millis() as u64 / 1000 + 600;
        let token = |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let who = auth
            .verify(&token(
                serde_json::json!({ "user_id": "u_seed", "exp": exp }),
            ))
            .unwrap();
        assert_eq!(who.user_id.as_str(), "u_seed");
        assert_eq!(who.tenant_id.as_str(), "t_default");
        let who = auth
            .verify(&token(
                serde_json::json!({ "sub": "s", "user_id": "u", "tenant_id": "t9", "exp": exp }),
            ))
            .unwrap();
        assert_eq!((who.user_id.as_str(), who.tenant_id.as_str()), ("s", "t9"));
        assert!(
            auth.verify(&token(serde_json::json!({ "exp": exp })))
                .is_err()
        );
        s.default_tenant = "acme".into();
        let acme = JwtAuth::from_settings(&s).unwrap();
        let who = acme
            .verify(&token(serde_json::json!({ "sub": "s", "exp": exp })))
            .unwrap();
        assert_eq!(who.tenant_id.as_str(), "acme");
    }
}
