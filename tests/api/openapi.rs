//! The published schema: `/openapi.json` lists exactly the routes the
//! router serves, and real answers have the documented shapes; `/docs`
//! serves its page and assets from the binary.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, join_body, spawn_app};

/// The API's routes as SPEC §3 names them: the public contract.
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/matchmaking/queue"),
    ("GET", "/v1/matchmaking/queue/{queue_entry_id}"),
    ("DELETE", "/v1/matchmaking/queue/{queue_entry_id}"),
    ("GET", "/v1/matchmaking/queue/{queue_entry_id}/events"),
    ("POST", "/v1/matchmaking/queue/{queue_entry_id}/heartbeat"),
    ("GET", "/v1/matchmaking/active"),
    ("POST", "/v1/matchmaking/challenges"),
    ("GET", "/v1/matchmaking/challenges/incoming"),
    ("GET", "/v1/matchmaking/challenges/outgoing"),
    ("GET", "/v1/matchmaking/challenges/{challenge_id}"),
    ("DELETE", "/v1/matchmaking/challenges/{challenge_id}"),
    ("POST", "/v1/matchmaking/challenges/{challenge_id}/accept"),
    ("POST", "/v1/matchmaking/challenges/{challenge_id}/decline"),
    ("GET", "/internal/queues/summary"),
    ("GET", "/internal/audit"),
    ("GET", "/internal/policies/{tenant_id}"),
    ("PUT", "/internal/policies/{tenant_id}"),
    ("DELETE", "/internal/policies/{tenant_id}"),
    ("GET", "/internal/policies/{tenant_id}/{pool_key}"),
    ("PUT", "/internal/policies/{tenant_id}/{pool_key}"),
    ("DELETE", "/internal/policies/{tenant_id}/{pool_key}"),
    ("GET", "/internal/tenants/{tenant_id}/config"),
    ("PUT", "/internal/tenants/{tenant_id}/config"),
    ("DELETE", "/internal/tenants/{tenant_id}/config"),
    ("GET", "/internal/tenants/{tenant_id}/flags"),
    ("PUT", "/internal/tenants/{tenant_id}/flags"),
    ("DELETE", "/internal/tenants/{tenant_id}/flags"),
    ("GET", "/internal/ratings/{tenant_id}/{user_id}"),
    ("PUT", "/internal/ratings/{tenant_id}/{user_id}"),
    ("POST", "/internal/games/{game_id}/finished"),
    ("POST", "/internal/games/{game_id}/aborted"),
    (
        "GET",
        "/internal/pools/{tenant_id}/{pool_key}/entries/{queue_entry_id}/explain",
    ),
    ("GET", "/internal/blocks/{tenant_id}/{user_id}"),
    (
        "PUT",
        "/internal/blocks/{tenant_id}/{user_id}/{blocked_user_id}",
    ),
    (
        "DELETE",
        "/internal/blocks/{tenant_id}/{user_id}/{blocked_user_id}",
    ),
    ("GET", "/internal/restricted/{tenant_id}/{user_id}"),
    ("PUT", "/internal/restricted/{tenant_id}/{user_id}"),
    ("DELETE", "/internal/restricted/{tenant_id}/{user_id}"),
    ("GET", "/healthz"),
    ("GET", "/health"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

async fn document(app: &TestApp) -> Value {
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| METHODS.contains(&m.to_uppercase().as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A concrete URL for a templated path.
fn concrete(path: &str) -> String {
    path.replace("{queue_entry_id}", "q_x")
        .replace("{challenge_id}", "c_x")
        .replace("{tenant_id}", "t1")
        .replace("{user_id}", "u1")
        .replace("{blocked_user_id}", "u2")
        .replace("{game_id}", "g_x")
        .replace("{pool_key}", "standard_5+0_rated_GLOBAL")
}

async fn call(app: &TestApp, method: &str, path: &str) -> reqwest::Response {
    app.client
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{}", app.address, concrete(path)),
        )
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let listed = documented(&doc);
    let spec: BTreeSet<(String, String)> = SPEC_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, spec, "documented routes differ from SPEC §3");
    let paths: BTreeSet<&str> = listed.iter().map(|(_, p)| p.as_str()).collect();
    for path in paths {
        for method in METHODS {
            let r = call(&app, method, path).await;
            let status = r.status();
            let body = r.text().await.unwrap();
            if listed.contains(&(method.to_string(), path.to_string())) {
                // Served: whatever the handler answers, it is not the
                // router's "no such route" or "method not allowed".
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(!body.contains("no such route"), "{method} {path}: {body}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
    // And nothing outside the document answers (but the docs page).
    let r = call(&app, "GET", "/v1/matchmaking/nothing").await;
    assert!(r.text().await.unwrap().contains("no such route"));
    app.shutdown().await;
}

#[tokio::test]
async fn every_player_and_admin_route_needs_the_bearer_token_and_documents_its_errors() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let secured = op["security"] == json!([{ "bearer": [] }]);
            let api = path.starts_with("/v1/") || path.starts_with("/internal/");
            assert_eq!(secured, api, "{method} {path}: security");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}"
            );
            if api {
                for code in ["401", "429", "503"] {
                    let body = &responses[code]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        body, "#/components/schemas/ErrorBody",
                        "{method} {path} {code}"
                    );
                }
            }
        }
    }
    app.shutdown().await;
}

/// `value` has the shape of component `schema`: every key is a documented
/// property, every required property is there.
fn assert_shape(doc: &Value, schema: &str, value: &Value) {
    let s = &doc["components"]["schemas"][schema];
    let properties = s["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema}"));
    for key in value.as_object().unwrap().keys() {
        assert!(
            properties.contains_key(key),
            "{schema} does not document `{key}`: {value}"
        );
    }
    for required in s["required"].as_array().into_iter().flatten() {
        let key = required.as_str().unwrap();
        assert!(
            value.get(key).is_some(),
            "{schema} requires `{key}`: {value}"
        );
    }
}

#[tokio::test]
async fn real_answers_have_the_documented_shapes() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let r = app.join(&alice, &join_body("5+0")).await;
    let joined: Value = r.json().await.unwrap();
    assert_shape(&doc, "JoinResponse", &joined);
    let id = joined["queue_entry_id"].as_str().unwrap();
    assert_shape(&doc, "EntryStatus", &app.status_json(&alice, id).await);
    assert_shape(&doc, "Active", &app.active(&alice).await);
    assert_shape(
        &doc,
        "ActiveEntry",
        &app.active(&alice).await["queue_entry"],
    );
    let b = app.join_ok(&bob, &join_body("5+0")).await;
    let matched = app.wait_for_result(&bob, &b).await;
    assert_shape(&doc, "EntryStatus", &matched);
    assert_shape(&doc, "Opponent", &matched["opponent"]);
    assert_shape(
        &doc,
        "RatingSnapshot",
        &matched["opponent"]["rating_snapshot"],
    );
    let active = app.active(&bob).await;
    assert_shape(&doc, "ActiveMatch", &active["match"]);

    let summary: Value = app
        .client
        .get(format!("{}/internal/queues/summary", app.address))
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(&doc, "QueueSummary", &summary);
    assert_shape(&doc, "PoolSummary", &summary["queues"][0]);

    let challenge: Value = app
        .client
        .post(format!("{}/v1/matchmaking/challenges", app.address))
        .bearer_auth(app.token("carol"))
        .json(&json!({ "opponent_user_id": "dave", "time_control": "5+0", "mode": "casual" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape(&doc, "Challenge", &challenge);
    let r = app.get_ratings(&app.admin_token(), "t1", "alice").await;
    assert_shape(&doc, "Ratings", &r.json().await.unwrap());
    assert_shape(
        &doc,
        "Readiness",
        &app.get("/readyz").await.json().await.unwrap(),
    );
    assert_shape(
        &doc,
        "Health",
        &app.get("/healthz").await.json().await.unwrap(),
    );
    let r = app.status(&alice, "q_nope").await;
    assert_shape(&doc, "ErrorBody", &r.json().await.unwrap());
    app.shutdown().await;
}

#[tokio::test]
async fn the_docs_page_and_its_assets_come_from_the_binary() {
    let app = spawn_app().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "the page must not load anything from the network"
    );
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let r = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        let body = r.text().await.unwrap();
        assert!(body.len() > 100, "{asset}");
        if asset == "swagger-initializer.js" {
            assert!(body.contains("/openapi.json"), "{body}");
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_document_is_as_strict_as_the_server() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let join = &schemas["JoinRequest"]["properties"];
    // The default tenant's time controls, and what the parsers take.
    assert!(
        join["time_control"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("5+0"))
    );
    assert_eq!(join["mode"]["enum"], json!(["rated", "casual"]));
    assert!(
        join["region"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("DEFAULT"))
    );
    assert!(
        join["variant"]["enum"]
            .as_array()
            .unwrap()
            .contains(&Value::Null)
    );
    // Ratings: no null (the server refuses it), no unknown key, in range.
    let update = &schemas["RatingsUpdate"];
    assert_eq!(update["additionalProperties"], json!(false));
    // Several time controls: of one speed (one enum per speed), 1 to 4,
    // and exactly one of time_control and time_controls.
    let several = &join["time_controls"];
    assert_eq!(
        (several["minItems"].as_u64(), several["maxItems"].as_u64()),
        (Some(1), Some(4))
    );
    let speeds = several["oneOf"].as_array().unwrap();
    assert!(speeds.len() >= 3, "{several}");
    for alternative in speeds {
        let speed = |tc: &Value| {
            tc.as_str()
                .unwrap()
                .parse::<matchmaking_api::domain::TimeControl>()
                .unwrap()
                .speed()
        };
        let tcs = alternative["items"]["enum"].as_array().unwrap();
        assert!(
            tcs.iter().all(|tc| speed(tc) == speed(&tcs[0])),
            "{alternative}"
        );
    }
    assert_eq!(schemas["JoinRequest"]["required"], json!(["mode"]));
    assert_eq!(schemas["JoinRequest"]["oneOf"].as_array().unwrap().len(), 2);
    // A bare rating, or {"rating", "rd"} and nothing else.
    let rapid = &update["properties"]["rapid"]["oneOf"];
    assert_eq!(rapid[0]["type"], json!("integer"));
    assert_eq!(rapid[1]["additionalProperties"], json!(false));
    assert_eq!(rapid[1]["required"], json!(["rating"]));
    assert_eq!(rapid[1]["properties"]["rd"]["maximum"], json!(1000));
    assert_eq!(
        update["properties"]["blitz_chess960"]["oneOf"][0]["maximum"],
        json!(4000)
    );
    // Every error code the server answers, and only those.
    assert_eq!(
        schemas["ErrorDetail"]["properties"]["code"]["enum"],
        json!(matchmaking_api::error::ServiceError::CODES)
    );
    // Parameters: ids with the server's rules, the key not nullable.
    let join_op = &doc["paths"]["/v1/matchmaking/queue"]["post"];
    let key = join_op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key["schema"]["type"], json!("string"));
    assert_eq!(key["schema"]["maxLength"], json!(255));
    let ratings = &doc["paths"]["/internal/ratings/{tenant_id}/{user_id}"]["get"];
    for p in ratings["parameters"].as_array().unwrap() {
        assert_eq!(p["schema"]["minLength"], json!(1), "{p}");
    }
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            assert!(
                op.get("parameters").is_none_or(Value::is_array),
                "{method} {path}: parameters must be a list when present"
            );
        }
    }
}

/// The document reads on its own: no reference to a document outside the
/// repository, the built-in game creator named beside live-game-api, and
/// every header a plain string.
#[tokio::test]
async fn the_document_stands_on_its_own() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let text = doc.to_string();
    assert!(!text.contains("SPEC"), "a reference to the SPEC");
    assert!(
        doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("built-in creator")
    );
    let mut headers = 0;
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "header" {
                    headers += 1;
                    assert_eq!(p["schema"]["type"], "string", "{p}");
                }
            }
        }
    }
    assert!(headers >= 1, "Idempotency-Key is documented");
}
