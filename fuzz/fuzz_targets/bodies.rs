//! Request bodies through the real router (no socket): the first byte picks
//! a route that reads a body, the rest is the body. Every answer is a
//! decision in the error shape or a success, never a 500 (a panic caught)
//! and never a body outside the shape.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use matchmaking_api::auth::JwtAuth;
use matchmaking_api::settings::{Settings, TokenArgs};
use matchmaking_api::startup::Application;
use tower_service::Service;

struct Target {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    user: String,
    admin: String,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::from_env();
        settings.bind_addr = "127.0.0.1:0".parse().unwrap();
        settings.data_dir = dir.path().to_path_buf();
        settings.database_url = None;
        settings.redis_url = None;
        settings.jwt_secret = Some("fuzz-secret-fuzz-secret-fuzz-secret-0123".into());
        settings.rate_limit_per_ip = 0;
        settings.rate_limit_per_user = 0;
        settings.metrics_enabled = false;
        let auth = JwtAuth::from_settings(&settings).unwrap();
        let mint = |user: &str, roles: Vec<String>| {
            auth.mint(&TokenArgs {
                user: user.into(),
                tenant: Some("t1".into()),
                username: None,
                roles,
                ttl: 86_400,
            })
            .unwrap()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = runtime.block_on(Application::build(settings)).unwrap();
        Target {
            router: app.router(),
            user: mint("fuzzer", vec![]),
            admin: mint("operator", vec!["admin".into()]),
            runtime,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let t = target();
    let (method, path, token) = match selector % 5 {
        0 => (Method::POST, "/v1/matchmaking/queue", &t.user),
        1 => (Method::POST, "/v1/matchmaking/challenges", &t.user),
        2 => (Method::PUT, "/internal/ratings/t1/someone", &t.admin),
        3 => (Method::POST, "/internal/games/g_fuzz/finished", &t.admin),
        _ => (Method::POST, "/v1/matchmaking/challenges/c_01HZZZZZZZZZZZZZZZZZZZZZZZ/accept", &t.user),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
    let answer = t
        .runtime
        .block_on(t.router.clone().call(request))
        .unwrap();
    let status = answer.status();
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{data:?}");
    if !status.is_success() {
        let bytes = t
            .runtime
            .block_on(axum::body::to_bytes(answer.into_body(), 1 << 20))
            .unwrap();
        let shaped: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON error");
        assert!(shaped["error"]["code"].is_string(), "{shaped}");
    }
});
