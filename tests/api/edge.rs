//! What browsers and proxies meet first (SPEC §8): CORS for the allowed
//! origins, and `ALLOWED_HOSTS`. Over HTTP as a browser would send it, then
//! in a real headless Chromium from another origin.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::helpers::{TestApp, error_code, join_body, spawn_app, spawn_app_with};
use crate::support;

const PAGE_ORIGIN: &str = "https://play.example.com";

async fn preflight(app: &TestApp, method: &str, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", app.address))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key,x-request-id,last-event-id",
        )
        .send()
        .await
        .expect("request")
}

fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every documented operation, its path parameters filled in.
async fn operations(app: &TestApp) -> Vec<(String, String)> {
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut ops = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in methods.as_object().unwrap().keys() {
            ops.push((method.to_ascii_uppercase(), concrete.clone()));
        }
    }
    assert!(ops.len() > 15, "{ops:?}");
    ops
}

#[tokio::test]
async fn without_cors_settings_no_cors_headers_are_sent() {
    let app = spawn_app().await;
    let r = preflight(&app, "POST", "/v1/matchmaking/queue", PAGE_ORIGIN).await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("origin", PAGE_ORIGIN)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn preflight_is_answered_for_every_route_and_only_for_allowed_origins() {
    let app = spawn_app_with(|s| {
        s.cors_allowed_origins = Some(format!("{PAGE_ORIGIN}, http://localhost:3000"));
    })
    .await;
    for (method, path) in operations(&app).await {
        let r = preflight(&app, &method, &path, PAGE_ORIGIN).await;
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        let h = r.headers();
        assert!(h.contains_key("x-request-id"), "{method} {path}");
        assert_eq!(
            h["access-control-allow-origin"], PAGE_ORIGIN,
            "{method} {path}"
        );
        assert!(
            header_list(h, "access-control-allow-methods").contains(&method.to_ascii_lowercase()),
            "{method} {path}: {h:?}"
        );
        let allowed = header_list(h, "access-control-allow-headers");
        for name in [
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
            "last-event-id",
        ] {
            assert!(allowed.contains(&name.to_owned()), "{name}: {allowed:?}");
        }
        let other = preflight(&app, &method, &path, "https://evil.example").await;
        assert!(
            other.headers().get("access-control-allow-origin").is_none(),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn answers_and_errors_carry_the_exposed_headers_for_an_allowed_origin() {
    let app = spawn_app_with(|s| s.cors_allowed_origins = Some(PAGE_ORIGIN.into())).await;
    let r = app
        .client
        .post(format!("{}/v1/matchmaking/queue", app.address))
        .header("origin", PAGE_ORIGIN)
        .bearer_auth(app.token("alice"))
        .json(&join_body("5+0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["access-control-allow-origin"], PAGE_ORIGIN);
    let exposed = header_list(r.headers(), "access-control-expose-headers");
    assert!(exposed.contains(&"x-request-id".to_owned()), "{exposed:?}");
    assert!(exposed.contains(&"retry-after".to_owned()), "{exposed:?}");
    // A refusal is readable by the page too.
    let r = app
        .client
        .get(format!("{}/v1/matchmaking/active", app.address))
        .header("origin", PAGE_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["access-control-allow-origin"], PAGE_ORIGIN);
}

#[tokio::test]
async fn a_wildcard_allows_any_origin() {
    let app = spawn_app_with(|s| s.cors_allowed_origins = Some("*".into())).await;
    let r = preflight(
        &app,
        "POST",
        "/v1/matchmaking/queue",
        "https://anyone.example",
    )
    .await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn another_host_is_refused_in_the_error_shape_and_probes_answer_any() {
    let app = spawn_app_with(|s| s.allowed_hosts = Some("api.example.com,localhost".into())).await;
    let token = app.token("alice");
    let join = |host: &'static str| {
        app.client
            .post(format!("{}/v1/matchmaking/queue", app.address))
            .header("host", HeaderValue::from_static(host))
            .bearer_auth(&token)
            .json(&join_body("5+0"))
            .send()
    };
    let active = || async {
        let r = app
            .client
            .get(format!("{}/v1/matchmaking/active", app.address))
            .header("host", "api.example.com")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()
    };
    let r = join("evil.example").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "INVALID_REQUEST");
    assert_eq!(v["error"]["request_id"], request_id.as_str());
    assert_eq!(active().await["queue_entry"], Value::Null);
    // 127.0.0.1 is not in the list either (the client's default Host).
    let r = app.join(&token, &join_body("5+0")).await;
    assert_eq!(error_code(r).await, "INVALID_REQUEST");
    let r = join("API.example.com:443").await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(active().await["queue_entry"]["status"], "SEARCHING");
    for path in ["/healthz", "/health", "/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn unusable_edge_settings_stop_the_start() {
    for (origins, hosts) in [
        (Some("play.example.com"), None),
        (Some("https://play.example.com/path"), None),
        (None, Some("https://api.example.com")),
        (None, Some(" , ")),
    ] {
        let mut settings = matchmaking_api::settings::Settings::from_env();
        settings.cors_allowed_origins = origins.map(Into::into);
        settings.allowed_hosts = hosts.map(Into::into);
        let err = matchmaking_api::http::edge::Edge::from_settings(&settings)
            .err()
            .unwrap();
        assert!(
            err.contains("CORS_ALLOWED_ORIGINS") || err.contains("ALLOWED_HOSTS"),
            "{err}"
        );
    }
}

/// The page a browser client would be: joins with the token it is given,
/// polls until matched, and writes what it saw into the document.
const PAGE: &str = r#"<!doctype html>
<html><body><pre id="out">running</pre><script>
const q = new URLSearchParams(location.search);
const api = q.get("api");
const out = document.getElementById("out");
async function call(token, method, path, body) {
  const init = { method, headers: { "Authorization": "Bearer " + token } };
  if (body) {
    init.headers["Content-Type"] = "application/json";
    init.headers["Idempotency-Key"] = "k-" + Math.random();
    init.body = JSON.stringify(body);
  }
  const r = await fetch(api + path, init);
  return { status: r.status, rid: r.headers.get("X-Request-Id"), body: await r.json() };
}
(async () => {
  try {
    const join = { time_control: "5+0", mode: "rated" };
    const a = await call(q.get("a"), "POST", "/v1/matchmaking/queue", join);
    const b = await call(q.get("b"), "POST", "/v1/matchmaking/queue", join);
    let s = null;
    for (let i = 0; i < 200; i++) {
      s = await call(q.get("a"), "GET", "/v1/matchmaking/queue/" + a.body.queue_entry_id);
      if (s.body.status !== "SEARCHING") break;
      await new Promise(r => setTimeout(r, 50));
    }
    out.textContent = "RESULT " + JSON.stringify({
      join: a.status, join_rid: a.rid, second: b.status,
      status: s.body.status, game_id: s.body.game_id || null,
    });
  } catch (e) {
    out.textContent = "BLOCKED " + e.name;
  }
})();
</script></body></html>"#;

/// A browser client that waits on its entry's event stream. `EventSource`
/// cannot send an `Authorization` header, so it reads the stream with
/// `fetch` (which can, and sends `Last-Event-ID` the same way), event by
/// event, until the final one.
const STREAM_PAGE: &str = r#"<!doctype html>
<html><body><pre id="out">running</pre><script>
const q = new URLSearchParams(location.search);
const api = q.get("api");
const out = document.getElementById("out");
function post(token, path, body) {
  return fetch(api + path, { method: "POST", body: JSON.stringify(body),
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" } });
}
(async () => {
  try {
    const join = { time_control: "5+0", mode: "rated" };
    const a = await (await post(q.get("a"), "/v1/matchmaking/queue", join)).json();
    const r = await fetch(api + "/v1/matchmaking/queue/" + a.queue_entry_id + "/events",
      { headers: { "Authorization": "Bearer " + q.get("a"), "Last-Event-ID": "" } });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    // Headless Chromium's virtual time runs on while a body streams in and
    // pauses only for requests in flight: one is kept in flight until the
    // stream ends, so the page is read after its last event, not before.
    let finished = false;
    (async () => { while (!finished) await fetch(api + "/healthz").catch(() => {}); })();
    const events = [];
    let buffer = "", joined = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const id = (block.match(/^id: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (data) events.push({ id, status: JSON.parse(data).status });
      }
      if (events.length && !joined) {
        joined = true;
        await post(q.get("b"), "/v1/matchmaking/queue", join);
      }
    }
    finished = true;
    out.textContent = "RESULT " + JSON.stringify({
      status: r.status, type: r.headers.get("Content-Type"), events });
  } catch (e) {
    out.textContent = "BLOCKED " + e.name;
  }
})();
</script></body></html>"#;

/// Serves [`PAGE`] (and [`STREAM_PAGE`]) on a port of its own: another
/// origin than the API's.
async fn serve_page() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route(
            "/page.html",
            axum::routing::get(|| async { axum::response::Html(PAGE) }),
        )
        .route(
            "/stream.html",
            axum::routing::get(|| async { axum::response::Html(STREAM_PAGE) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://127.0.0.1:{}", addr.port())
}

/// The Chromium on PATH, or `None` (the test skips; in CI it fails).
pub fn chromium() -> Option<&'static str> {
    let browser = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if browser.is_none() {
        support::unreachable("Chromium", "no chromium on PATH (apt-get install chromium)");
    }
    browser
}

/// Loads the page in headless Chromium and answers the text it wrote, or
/// `None` (skip, or fail in CI) without a browser.
async fn browse(url: &str) -> Option<String> {
    let browser = chromium()?;
    let profile = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("timeout");
    command
        .args(["60", browser])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("chromium ran");
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = dom.find("<pre id=\"out\">").expect("the page's output") + 14;
    let end = start + dom[start..].find("</pre>").unwrap();
    Some(dom[start..end].replace("&quot;", "\""))
}

/// Loads `page` of the origin `allowed` against `app` for players `a` and
/// `b`, and answers the JSON after `RESULT ` it wrote (`None` without a
/// browser).
async fn page_result(
    allowed: &str,
    page: &str,
    app: &TestApp,
    (a, b): (&str, &str),
) -> Option<Value> {
    let seen = browse(&format!("{allowed}/{page}?api={}&a={a}&b={b}", app.address)).await?;
    let json = seen
        .strip_prefix("RESULT ")
        .unwrap_or_else(|| panic!("{seen}"));
    Some(serde_json::from_str(json).unwrap())
}

#[tokio::test]
async fn a_browser_on_an_allowed_origin_joins_and_polls_and_another_origin_is_blocked() {
    let allowed = serve_page().await;
    let app = spawn_app_with(|s| s.cors_allowed_origins = Some(allowed.clone())).await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let Some(v) = page_result(&allowed, "page.html", &app, (&a, &b)).await else {
        return;
    };
    assert_eq!(v["join"], 201, "{v}");
    assert_eq!(v["second"], 201, "{v}");
    assert!(
        v["join_rid"].as_str().is_some_and(|r| !r.is_empty()),
        "X-Request-Id readable: {v}"
    );
    assert_eq!(v["status"], "MATCHED", "{v}");
    assert!(v["game_id"].as_str().is_some(), "{v}");

    // The same page from an origin not in the list: the browser blocks the
    // preflight, so no join is even sent.
    let other = serve_page().await;
    let (c, d) = (app.token("carol"), app.token("dave"));
    let seen = browse(&format!(
        "{other}/page.html?api={}&a={c}&b={d}",
        app.address
    ))
    .await
    .unwrap();
    assert_eq!(seen, "BLOCKED TypeError");
    assert_eq!(app.active(&c).await["queue_entry"], Value::Null);
}

#[tokio::test]
async fn a_browser_on_an_allowed_origin_waits_on_the_event_stream() {
    let allowed = serve_page().await;
    let app = spawn_app_with(|s| s.cors_allowed_origins = Some(allowed.clone())).await;
    let (a, b) = (app.token("alice"), app.token("bob"));
    let Some(v) = page_result(&allowed, "stream.html", &app, (&a, &b)).await else {
        return;
    };
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["type"], "text/event-stream", "{v}");
    assert_eq!(
        v["events"],
        serde_json::json!([
            { "id": "1", "status": "SEARCHING" },
            { "id": "1000000", "status": "MATCHED" },
        ]),
        "{v}"
    );
}
