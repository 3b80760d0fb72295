//! `JWT_JWKS_URL`: keys generated here (RSA 2048 and P-256), published by a
//! local JWK Set server that rotates them, goes down and counts its reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core_06::OsRng;
use reqwest::StatusCode;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};

/// A signing key and the JWK that publishes it.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key in PEM (for the algorithm-confusion attack).
    public_pem: String,
}

fn rsa_key(kid: &str) -> SigningKey {
    let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let public = private.to_public_key();
    let pem = private.to_pkcs1_pem(LineEnding::LF).unwrap();
    SigningKey {
        kid: kid.into(),
        algorithm: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": B64.encode(public.n().to_bytes_be()),
            "e": B64.encode(public.e().to_bytes_be()),
        }),
        public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

fn ec_key(kid: &str) -> SigningKey {
    let secret = p256::SecretKey::random(&mut OsRng);
    let point = secret.public_key().to_encoded_point(false);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    SigningKey {
        kid: kid.into(),
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        jwk: json!({
            "kty": "EC", "kid": kid, "crv": "P-256",
            "x": B64.encode(point.x().unwrap()),
            "y": B64.encode(point.y().unwrap()),
        }),
        public_pem: secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

fn claims(user: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({ "sub": user, "tenant_id": "t1", "exp": now + 600, "iat": now })
}

fn sign(key: &SigningKey, kid: Option<&str>, algorithm: Algorithm) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims("alice"), &key.encoding).unwrap()
}

fn token(key: &SigningKey) -> String {
    sign(key, Some(&key.kid), key.algorithm)
}

/// A JWK Set server: what it publishes, whether it is up, how often it
/// was read.
#[derive(Clone, Default)]
struct Provider {
    keys: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> (Self, String) {
        let provider = Provider::default();
        provider.publish(keys);
        let served = provider.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let p = served.clone();
                async move {
                    p.reads.fetch_add(1, Ordering::SeqCst);
                    if p.down.load(Ordering::SeqCst) {
                        return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                    }
                    let keys = p.keys.lock().unwrap().clone();
                    Ok(axum::Json(json!({ "keys": keys })))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (provider, url)
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

async fn spawn_with_jwks(url: &str, ttl: f64, min_refresh: f64) -> TestApp {
    let url = url.to_owned();
    spawn_app_with(move |s| {
        s.jwt_secret = None;
        s.jwt_jwks_url = Some(url);
        s.jwt_jwks_ttl_seconds = ttl;
        s.jwt_jwks_min_refresh_seconds = min_refresh;
    })
    .await
}

async fn active(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(format!("{}/v1/matchmaking/active", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn tokens_are_verified_with_the_key_their_kid_names_and_its_algorithm() {
    let (rsa, ec) = (rsa_key("r1"), ec_key("e1"));
    let (_provider, url) = Provider::start(&[&rsa, &ec]).await;
    let app = spawn_with_jwks(&url, 600.0, 30.0).await;
    assert_eq!(active(&app, &token(&rsa)).await, StatusCode::OK);
    assert_eq!(active(&app, &token(&ec)).await, StatusCode::OK);
    // The EC key signing under the RSA key's kid: the kid picks the key,
    // the key fixes the algorithm.
    assert_eq!(
        active(&app, &sign(&ec, Some("r1"), Algorithm::ES256)).await,
        StatusCode::UNAUTHORIZED
    );
    // No kid, two keys: no key is guessed.
    assert_eq!(
        active(&app, &sign(&rsa, None, Algorithm::RS256)).await,
        StatusCode::UNAUTHORIZED
    );
    // Algorithm confusion: HS256 with the RSA public key's PEM as secret.
    let confused = jsonwebtoken::encode(
        &Header {
            kid: Some("r1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("alice"),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(active(&app, &confused).await, StatusCode::UNAUTHORIZED);
    let confused_ec = jsonwebtoken::encode(
        &Header {
            kid: Some("e1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("alice"),
        &EncodingKey::from_secret(ec.public_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(active(&app, &confused_ec).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_rotated_key_is_read_on_its_first_token_and_unknown_kids_cause_no_fetch_storm() {
    let (old, new) = (rsa_key("old"), rsa_key("new"));
    // Signed up front: the storm below must come within the interval.
    let forged = rsa_key("forged");
    let tokens: Vec<String> = (0..200)
        .map(|i| sign(&forged, Some(&format!("kid-{i}")), Algorithm::RS256))
        .collect();
    let (provider, url) = Provider::start(&[&old]).await;
    let app = spawn_with_jwks(&url, 600.0, 3.0).await;
    assert_eq!(provider.reads(), 1, "read once at start");
    assert_eq!(active(&app, &token(&old)).await, StatusCode::OK);
    // The provider rotates: the new key's first token makes one read.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    provider.publish(&[&new, &old]);
    assert_eq!(active(&app, &token(&new)).await, StatusCode::OK);
    assert_eq!(provider.reads(), 2);
    // 200 tokens naming made-up kids, at once: refused, and at most one
    // read (none here: the last one is too recent).
    let answers = futures::future::join_all(tokens.iter().map(|t| active(&app, t))).await;
    assert!(answers.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(provider.reads(), 2, "no read within the minimum interval");
    // Past the interval, a storm makes exactly one read, shared.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let answers = futures::future::join_all(tokens.iter().map(|t| active(&app, t))).await;
    assert!(answers.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(provider.reads(), 3, "one read for the whole storm");
}

#[tokio::test]
async fn the_keys_in_hand_stay_while_the_provider_is_down() {
    let key = ec_key("k");
    let (provider, url) = Provider::start(&[&key]).await;
    let app = spawn_with_jwks(&url, 1.0, 0.2).await;
    provider.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Past the TTL: a background read fails; the key still verifies.
    assert_eq!(active(&app, &token(&key)).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(provider.reads() >= 2, "a read was tried");
    assert_eq!(active(&app, &token(&key)).await, StatusCode::OK);
    // Back up, with the key rotated away: past the TTL, the next read
    // replaces the set.
    provider.down.store(false, Ordering::SeqCst);
    let other = ec_key("k2");
    provider.publish(&[&other]);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let _ = active(&app, &token(&other)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(active(&app, &token(&other)).await, StatusCode::OK);
    assert_eq!(active(&app, &token(&key)).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_node_that_cannot_read_its_keys_does_not_start() {
    let mut settings = matchmaking_api::settings::Settings::from_env();
    let dir = tempfile::tempdir().unwrap();
    settings.bind_addr = "127.0.0.1:0".parse().unwrap();
    settings.data_dir = dir.path().to_path_buf();
    settings.database_url = None;
    settings.redis_url = None;
    settings.jwt_secret = None;
    settings.jwt_secret_key = None;
    settings.jwt_public_key_pem = None;
    settings.jwt_jwks_url = Some("http://127.0.0.1:9/jwks.json".into());
    let refused = matchmaking_api::startup::Application::build(settings)
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("JWT_JWKS_URL"), "{refused}");
}
