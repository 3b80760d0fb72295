use jsonwebtoken::{EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SECRET, error_code, join_body, spawn_app, spawn_app_with};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn assert_unauthorized(app: &crate::helpers::TestApp, token: Option<&str>) {
    let mut req = app
        .client
        .get(format!("{}/v1/matchmaking/active", app.address));
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?}");
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let has_detail = r.text().await.unwrap().contains("expired");
    assert!(!has_detail, "no detail that helps an attacker");
}

#[tokio::test]
async fn missing_malformed_forged_and_expired_tokens_are_401() {
    let app = spawn_app().await;
    assert_unauthorized(&app, None).await;
    assert_unauthorized(&app, Some("Bearer")).await;
    assert_unauthorized(&app, Some("Bearer not.a.jwt")).await;
    assert_unauthorized(&app, Some(&format!("Basic {}", app.token("alice")))).await;
    let forged = signed(
        json!({ "sub": "alice", "exp": now() + 600 }),
        "another-secret-another-secret-0000",
    );
    assert_unauthorized(&app, Some(&format!("Bearer {forged}"))).await;
    let expired = signed(json!({ "sub": "alice", "exp": now() - 120 }), SECRET);
    assert_unauthorized(&app, Some(&format!("Bearer {expired}"))).await;
    let no_exp = signed(json!({ "sub": "alice" }), SECRET);
    assert_unauthorized(&app, Some(&format!("Bearer {no_exp}"))).await;
    let bad_sub = signed(json!({ "sub": "has space", "exp": now() + 600 }), SECRET);
    assert_unauthorized(&app, Some(&format!("Bearer {bad_sub}"))).await;
}

#[tokio::test]
async fn clock_skew_within_the_leeway_is_accepted() {
    let app = spawn_app().await;
    let recent = signed(json!({ "sub": "alice", "exp": now() - 5 }), SECRET);
    let r = app.join(&recent, &join_body("5+0")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_token_without_a_tenant_claim_belongs_to_the_default_tenant() {
    let app = spawn_app().await;
    let t = signed(
        json!({ "sub": "alice", "exp": now() + 600, "username": "Al" }),
        SECRET,
    );
    let id = app.join_ok(&t, &join_body("5+0")).await;
    let default_alice = app.token_for("t_default", "alice", &[]);
    assert_eq!(
        app.status(&default_alice, &id).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.status(&app.token("alice"), &id).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_seeds_tokens_name_the_user_in_user_id() {
    let app = spawn_app().await;
    let seed = signed(json!({ "user_id": "u_42", "exp": now() + 600 }), SECRET);
    let id = app.join_ok(&seed, &join_body("5+0")).await;
    let same = app.token_for("t_default", "u_42", &[]);
    assert_eq!(app.status(&same, &id).await.status(), StatusCode::OK);
    let nobody = signed(json!({ "exp": now() + 600, "tenant_id": "t1" }), SECRET);
    assert_unauthorized(&app, Some(&format!("Bearer {nobody}"))).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(|s| {
        s.jwt_issuer = Some("https://id.example".into());
        s.jwt_audience = Some("matchmaking".into());
    })
    .await;
    let good = signed(
        json!({ "sub": "a", "exp": now() + 600, "iss": "https://id.example", "aud": "matchmaking" }),
        SECRET,
    );
    assert_eq!(
        app.join(&good, &join_body("5+0")).await.status(),
        StatusCode::CREATED
    );
    for claims in [
        json!({ "sub": "b", "exp": now() + 600, "iss": "https://evil", "aud": "matchmaking" }),
        json!({ "sub": "b", "exp": now() + 600, "iss": "https://id.example", "aud": "other" }),
        json!({ "sub": "b", "exp": now() + 600 }),
    ] {
        let r = app.join(&signed(claims, SECRET), &join_body("5+0")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The token subcommand's tokens carry both, so they pass.
    assert_eq!(
        app.join(&app.token("c"), &join_body("5+0")).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_role() {
    let app = spawn_app().await;
    let player = app.token("alice");
    let r = app.get_ratings(&player, "t1", "alice").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "FORBIDDEN");
    let r = app.game_finished(&player, "g_x").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .client
        .get(format!("{}/internal/ratings/t1/alice", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

const RSA_PRIVATE: &str = include_str!("../keys/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../keys/rsa-public.pem");
const EC_PRIVATE: &str = include_str!("../keys/ec-private.pem");
const EC_PUBLIC: &str = include_str!("../keys/ec-public.pem");

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn signed_with(
    alg: jsonwebtoken::Algorithm,
    key: &EncodingKey,
    claims: serde_json::Value,
) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_their_tokens_only() {
    for (public, alg, private) in [
        (
            RSA_PUBLIC,
            jsonwebtoken::Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            EC_PUBLIC,
            jsonwebtoken::Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        ),
    ] {
        let app = spawn_app_with(|s| {
            s.jwt_secret = None;
            s.jwt_public_key_pem = Some(public.into());
        })
        .await;
        let good = signed_with(alg, &private, json!({ "sub": "alice", "exp": now() + 600 }));
        assert_eq!(
            app.join(&good, &join_body("5+0")).await.status(),
            StatusCode::CREATED,
            "{alg:?}"
        );
        // Algorithm confusion: HS256 keyed with the public key's PEM.
        let confused = signed(json!({ "sub": "mallory", "exp": now() + 600 }), public);
        assert_unauthorized(&app, Some(&format!("Bearer {confused}"))).await;
        // A tampered payload under a real signature.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = b64(json!({ "sub": "mallory", "exp": now() + 600 })
            .to_string()
            .as_bytes());
        assert_unauthorized(&app, Some(&format!("Bearer {}", parts.join(".")))).await;
    }
}

#[tokio::test]
async fn forged_odd_and_oversized_tokens_are_401_without_detail() {
    let app = spawn_app().await;
    let claims = json!({ "sub": "mallory", "exp": now() + 600 });
    let payload = b64(claims.to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({ "alg": alg, "typ": "JWT" }).to_string().as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_unauthorized(&app, Some(&format!("Bearer {token}"))).await;
        }
    }
    // Not yet valid (past the leeway), and an unknown critical extension.
    let early = signed(
        json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 300 }),
        SECRET,
    );
    assert_unauthorized(&app, Some(&format!("Bearer {early}"))).await;
    let header = Header {
        crit: Some(vec!["exp-ext".into()]),
        ..Header::default()
    };
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let crit = encode(&header, &json!({ "sub": "a", "exp": now() + 600 }), &key).unwrap();
    assert_unauthorized(&app, Some(&format!("Bearer {crit}"))).await;
    // 100 KB of token, valid signature and all: refused before decoding.
    let huge = signed(
        json!({ "sub": "a", "exp": now() + 600, "pad": "x".repeat(100_000) }),
        SECRET,
    );
    assert_unauthorized(&app, Some(&format!("Bearer {huge}"))).await;
    assert_unauthorized(&app, Some(&format!("Bearer {}", "a.".repeat(40_000)))).await;
}

#[tokio::test]
async fn an_audience_may_be_an_array_that_contains_ours() {
    let app = spawn_app_with(|s| s.jwt_audience = Some("matchmaking".into())).await;
    let listed = signed(
        json!({ "sub": "a", "exp": now() + 600, "aud": ["accounts", "matchmaking"] }),
        SECRET,
    );
    assert_eq!(
        app.join(&listed, &join_body("5+0")).await.status(),
        StatusCode::CREATED
    );
    let elsewhere = signed(
        json!({ "sub": "b", "exp": now() + 600, "aud": ["accounts"] }),
        SECRET,
    );
    assert_unauthorized(&app, Some(&format!("Bearer {elsewhere}"))).await;
}

#[tokio::test]
async fn tokens_living_longer_than_the_configured_bound_are_refused() {
    let app = spawn_app_with(|s| s.jwt_max_lifetime_seconds = Some(3_600)).await;
    let ten_years = signed(
        json!({ "sub": "a", "exp": now() + 10 * 365 * 86_400 }),
        SECRET,
    );
    assert_unauthorized(&app, Some(&format!("Bearer {ten_years}"))).await;
    let issued_long = signed(
        json!({ "sub": "a", "iat": now() - 60, "exp": now() + 7_200 }),
        SECRET,
    );
    assert_unauthorized(&app, Some(&format!("Bearer {issued_long}"))).await;
    let hour = signed(
        json!({ "sub": "a", "iat": now(), "exp": now() + 3_000 }),
        SECRET,
    );
    assert_eq!(
        app.join(&hour, &join_body("5+0")).await.status(),
        StatusCode::CREATED
    );
}
