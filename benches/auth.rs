//! Token verification cost per request (issue 20): `JwtAuth::verify` on a
//! token like the platform's, signed HS256 (shared secret), RS256 (RSA
//! 2048) and ES256 (P-256), with the test keys of `tests/keys`.
//!
//! Run: `cargo bench --bench auth` (figures in BENCHMARKS.md).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use matchmaking_api::auth::JwtAuth;
use matchmaking_api::settings::Settings;
use serde_json::json;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-00";

fn verifier(secret: Option<&str>, pem: Option<&str>) -> JwtAuth {
    let mut s = Settings::from_env();
    s.jwt_secret = secret.map(Into::into);
    s.jwt_secret_key = None;
    s.jwt_public_key_pem = pem.map(Into::into);
    s.jwt_issuer = None;
    s.jwt_audience = None;
    JwtAuth::from_settings(&s).expect("keys")
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    let claims = json!({ "sub": "player-123456", "tenant_id": "t1", "exp": exp,
                         "preferred_username": "Player", "roles": [] });
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn verify(c: &mut Criterion) {
    let rsa_private = include_str!("../tests/keys/rsa-private.pem");
    let rsa_public = include_str!("../tests/keys/rsa-public.pem");
    let ec_private = include_str!("../tests/keys/ec-private.pem");
    let ec_public = include_str!("../tests/keys/ec-public.pem");
    let cases = [
        (
            "HS256",
            verifier(Some(SECRET), None),
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
        ),
        (
            "RS256",
            verifier(None, Some(rsa_public)),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap(),
            ),
        ),
        (
            "ES256",
            verifier(None, Some(ec_public)),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
            ),
        ),
    ];
    let mut group = c.benchmark_group("verify");
    for (name, auth, token) in &cases {
        assert!(auth.verify(token).is_ok(), "{name}");
        group.bench_function(*name, |b| b.iter(|| auth.verify(black_box(token)).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
