//! Bearer tokens: arbitrary text, and tokens whose header and payload are
//! arbitrary bytes in base64url around a real signature's shape. Refused
//! (never a panic, never accepted unsigned), in bounded work.
#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use matchmaking_api::auth::JwtAuth;
use matchmaking_api::settings::Settings;

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret-0123";

fn auth() -> &'static JwtAuth {
    static AUTH: OnceLock<JwtAuth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let mut settings = Settings::from_env();
        settings.jwt_secret = Some(SECRET.into());
        settings.jwt_secret_key = None;
        settings.jwt_public_key_pem = None;
        settings.jwt_jwks_url = None;
        JwtAuth::from_settings(&settings).expect("keys")
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert!(auth().verify(&text).is_err() || text.matches('.').count() == 2);
    // Header and payload from the input, under an honest HS256 signature
    // of something else, and under none.
    let (header, payload) = data.split_at(data.len() / 2);
    let signed = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "x", "exp": 1}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let signature = signed.rsplit('.').next().unwrap();
    for sig in [signature, ""] {
        let token = format!("{}.{}.{sig}", b64(header), b64(payload));
        assert!(auth().verify(&token).is_err(), "{token}");
    }
});
