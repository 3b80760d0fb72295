//! Keys an identity provider publishes as a JWK Set (`JWT_JWKS_URL`:
//! Keycloak, Auth0, Cognito, …), chosen by the token's `kid`.
//!
//! - Read at start (a node that cannot read them does not start), then
//!   again in the background once `JWT_JWKS_TTL_SECONDS` old; the keys in
//!   hand serve meanwhile, and are kept while the endpoint is down.
//! - A token naming a `kid` not in hand (the provider rotated) makes one
//!   read, shared by every request waiting on it, at most once per
//!   `JWT_JWKS_MIN_REFRESH_SECONDS`: a flood of made-up `kid`s costs the
//!   provider one request per interval.
//! - Each key allows one algorithm, from the key itself (its `alg`, else its
//!   type and curve), never from the token's header; shared-secret (`oct`)
//!   keys and keys not meant for signatures are ignored, so a public key
//!   can never be used as an HMAC secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// How long one read of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest key set read (a real one is a few KB).
const MAX_SET_BYTES: usize = 1024 * 1024;

/// One verification key, with the one algorithm it allows.
pub struct Key {
    pub decoding: DecodingKey,
    pub validation: Validation,
}

struct KeySet {
    /// By `kid`; a key published without one is under "".
    keys: HashMap<String, Arc<Key>>,
    fetched_at: Instant,
}

impl KeySet {
    /// The key `kid` names; a token without `kid` is taken only when the
    /// set has a single key.
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.keys.get(kid).cloned(),
            None if self.keys.len() == 1 => self.keys.values().next().cloned(),
            None => None,
        }
    }
}

/// The provider's keys, as last read.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    ttl: Duration,
    min_refresh: Duration,
    /// Issuer, audience, leeway, required claims: every key's validation
    /// starts from it.
    template: Validation,
    set: RwLock<Arc<KeySet>>,
    last_attempt: Mutex<Option<Instant>>,
    /// Held while a read is under way: requests needing one wait for it.
    reading: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(url: String, ttl: Duration, min_refresh: Duration, template: Validation) -> Self {
        Self {
            url,
            client: reqwest::Client::new(),
            ttl,
            min_refresh,
            template,
            set: RwLock::new(Arc::new(KeySet {
                keys: HashMap::new(),
                fetched_at: Instant::now(),
            })),
            last_attempt: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The key for `kid` among those in hand.
    pub fn key(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        self.current().find(kid)
    }

    /// The key for `kid`, reading the set again first when it is not in
    /// hand and the last read is older than the minimum interval; starts a
    /// background read when the set is past its TTL.
    pub async fn key_or_refresh(self: &Arc<Self>, kid: Option<&str>) -> Option<Arc<Key>> {
        let set = self.current();
        if set.fetched_at.elapsed() >= self.ttl && self.may_read() {
            let jwks = Arc::clone(self);
            tokio::spawn(async move {
                let _ = jwks.read_once_due().await;
            });
        }
        if let Some(key) = set.find(kid) {
            return Some(key);
        }
        metrics::counter!("matchmaking_jwks_unknown_kid_total").increment(1);
        let _ = self.read_once_due().await;
        self.key(kid)
    }

    /// Reads the set now; answers how many usable keys it has. The keys in
    /// hand stay when the read fails or finds none.
    pub async fn refresh(&self) -> Result<usize, String> {
        *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let read = self.fetch().await;
        metrics::counter!(
            "matchmaking_jwks_reads_total",
            "outcome" => if read.is_ok() { "ok" } else { "failed" }
        )
        .increment(1);
        match read {
            Ok(keys) => {
                let count = keys.len();
                *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(KeySet {
                    keys,
                    fetched_at: Instant::now(),
                });
                tracing::info!(keys = count, url = %self.url, "JWKS read");
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %self.url, "JWKS read failed; the keys in hand stay");
                Err(e)
            }
        }
    }

    /// One read for everyone who needs one now, unless a read happened
    /// within the minimum interval.
    async fn read_once_due(&self) -> Result<(), String> {
        let _reading = self.reading.lock().await;
        // Whoever held the lock before may just have read.
        if !self.may_read() {
            return Ok(());
        }
        self.refresh().await.map(|_| ())
    }

    fn may_read(&self) -> bool {
        self.last_attempt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= self.min_refresh)
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.set.read().unwrap_or_else(|e| e.into_inner()))
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let mut answer = self
            .client
            .get(&self.url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("JWT_JWKS_URL unreachable: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("JWT_JWKS_URL answered {}", answer.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| format!("JWT_JWKS_URL: reading the answer: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_SET_BYTES {
                return Err(format!("JWT_JWKS_URL: answer over {MAX_SET_BYTES} bytes"));
            }
        }
        let keys = parse(&body, &self.template)?;
        if keys.is_empty() {
            return Err("JWT_JWKS_URL: no RSA or EC signing key in the set".into());
        }
        Ok(keys)
    }
}

/// The usable keys of a JWK Set; keys this service cannot or must not use
/// are skipped (one odd key does not lose the others).
pub fn parse(body: &[u8], template: &Validation) -> Result<HashMap<String, Arc<Key>>, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body)
        .map_err(|e| format!("JWT_JWKS_URL: not a JWK Set ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let Some(algorithm) = algorithm_of(&jwk) else {
            continue;
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let mut validation = template.clone();
        validation.algorithms = vec![algorithm];
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(
            kid,
            Arc::new(Key {
                decoding,
                validation,
            }),
        );
    }
    Ok(keys)
}

/// The one algorithm a key allows: its `alg` when that fits its type, else
/// the type's usual one; `None` for keys that are not RSA or EC public keys.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(K::RS256)) => Some(Algorithm::RS256),
        (AlgorithmParameters::RSA(_), Some(K::RS384)) => Some(Algorithm::RS384),
        (AlgorithmParameters::RSA(_), Some(K::RS512)) => Some(Algorithm::RS512),
        (AlgorithmParameters::RSA(_), Some(K::PS256)) => Some(Algorithm::PS256),
        (AlgorithmParameters::RSA(_), Some(K::PS384)) => Some(Algorithm::PS384),
        (AlgorithmParameters::RSA(_), Some(K::PS512)) => Some(Algorithm::PS512),
        (AlgorithmParameters::EllipticCurve(ec), None | Some(K::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Some(Algorithm::ES256)
        }
        (AlgorithmParameters::EllipticCurve(ec), None | Some(K::ES384))
            if ec.curve == EllipticCurve::P384 =>
        {
            Some(Algorithm::ES384)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secrets_encryption_keys_and_odd_keys_are_skipped() {
        let set = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB" },
            { "kty": "RSA", "kid": "ec-alg-on-rsa", "alg": "ES256", "n": "sXch", "e": "AQAB" },
            { "kty": "weird", "kid": "w" },
            { "kty": "RSA", "kid": "good", "use": "sig", "n": "sXch", "e": "AQAB" },
        ]});
        let keys = parse(set.to_string().as_bytes(), &Validation::default()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(keys["good"].validation.algorithms, vec![Algorithm::RS256]);
        assert!(parse(b"[]", &Validation::default()).is_err());
    }
}
