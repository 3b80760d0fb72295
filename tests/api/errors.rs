use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app, spawn_app_with};

async fn refused(app: &crate::helpers::TestApp, body: Value) -> String {
    let r = app.join(&app.token("alice"), &body).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "INVALID_REQUEST");
    v["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn each_bad_field_is_named_with_the_allowed_values() {
    let app = spawn_app().await;
    let m = refused(&app, json!({ "time_control": "4+0", "mode": "rated" })).await;
    assert!(
        m.starts_with("time_control:") && m.contains("5+0") && m.contains("30+20"),
        "{m}"
    );
    let m = refused(&app, json!({ "time_control": "five", "mode": "rated" })).await;
    assert!(
        m.starts_with("time_control:") && m.contains("allowed values"),
        "{m}"
    );
    let m = refused(&app, json!({ "time_control": "5+0", "mode": "ranked" })).await;
    assert!(
        m.starts_with("mode:") && m.contains("rated") && m.contains("casual"),
        "{m}"
    );
    let m = refused(
        &app,
        json!({ "time_control": "5+0", "mode": "rated", "variant": "chess961" }),
    )
    .await;
    assert!(
        m.starts_with("variant:") && m.contains("kingOfTheHill"),
        "{m}"
    );
    let m = refused(
        &app,
        json!({ "time_control": "5+0", "mode": "rated", "region": "MARS" }),
    )
    .await;
    assert!(m.starts_with("region:") && m.contains("OCEANIA"), "{m}");
    let m = refused(&app, json!({ "mode": "rated" })).await;
    assert!(
        m.starts_with("time_control:") && m.contains("required"),
        "{m}"
    );
    let m = refused(&app, json!({ "time_control": 5, "mode": "rated" })).await;
    assert!(
        m.starts_with("time_control:") && m.contains("string"),
        "{m}"
    );
    let m = refused(&app, json!(["not", "an", "object"])).await;
    assert!(m.contains("object"), "{m}");
}

#[tokio::test]
async fn client_metadata_must_be_a_small_shallow_object() {
    let app = spawn_app().await;
    let with =
        |meta: Value| json!({ "time_control": "5+0", "mode": "rated", "client_metadata": meta });
    let m = refused(&app, with(json!("text"))).await;
    assert!(m.starts_with("client_metadata:"), "{m}");
    let m = refused(
        &app,
        with(json!({ "a": { "b": { "c": { "d": { "e": 1 } } } } })),
    )
    .await;
    assert!(m.contains("nest"), "{m}");
    let m = refused(&app, with(json!({ "blob": "x".repeat(2000) }))).await;
    assert!(m.contains("bytes"), "{m}");
    let ok = app
        .join(
            &app.token("alice"),
            &with(json!({ "client": "web", "v": [1, 2] })),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn malformed_json_and_wrong_content_types_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let url = format!("{}/v1/matchmaking/queue", app.address);
    let t = app.token("alice");
    let r = app
        .client
        .post(&url)
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "INVALID_REQUEST");
    let r = app
        .client
        .post(&url)
        .bearer_auth(&t)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "INVALID_REQUEST");
    let r = app.client.post(&url).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let body = json!({ "time_control": "5+0", "mode": "rated", "pad": "x".repeat(4000) });
    let r = app.join(&app.token("alice"), &body).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let r = app.get("/v2/nothing").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NOT_FOUND");
    let r = app
        .client
        .patch(format!("{}/v1/matchmaking/queue", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn the_request_id_is_echoed_when_sane_and_generated_otherwise() {
    let app = spawn_app().await;
    let url = format!("{}/healthz", app.address);
    let r = app
        .client
        .get(&url)
        .header("x-request-id", "client-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-abc.123");
    let r = app
        .client
        .get(&url)
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 26, "a ULID");
    // Error bodies carry the same id as the header.
    let r = app
        .client
        .get(format!("{}/nope", app.address))
        .header("x-request-id", "trace-7")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["request_id"], "trace-7");
}

#[tokio::test]
async fn ids_that_are_not_utf8_are_404_in_the_error_shape() {
    let app = spawn_app().await;
    let (player, admin) = (app.token("alice"), app.admin_token());
    for (method, path, token) in [
        ("GET", "/v1/matchmaking/queue/%FF%FE", &player),
        ("DELETE", "/v1/matchmaking/queue/q_%C3%28", &player),
        ("GET", "/v1/matchmaking/challenges/%FF", &player),
        ("POST", "/v1/matchmaking/challenges/%FF/accept", &player),
        ("GET", "/internal/ratings/t1/%FF", &admin),
        ("POST", "/internal/games/%FF/finished", &admin),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "NOT_FOUND", "{method} {path}");
        assert_eq!(v["error"]["request_id"], request_id.as_str());
    }
}
