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
