//! The live dashboard in a real headless Chromium, driven through the
//! DevTools protocol as an operator would use it: the page is served by the
//! binary with its assets, asks for a token and keeps it in memory only,
//! shows each pool's figures changing under traffic, and edits a pool's
//! policy and the tenant's flags through the admin API. The test saves a
//! screenshot (`$CARGO_TARGET_TMPDIR/dashboard.png`, and
//! `$DASHBOARD_SCREENSHOT` when set).

use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use crate::edge::chromium;
use crate::helpers::{TestApp, join_body, spawn_app};

const POOL: &str = "standard_5+0_rated_GLOBAL";

/// One page of a headless Chromium, over the DevTools protocol.
struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    _browser: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Page {
    /// Opens `url` in a new headless Chromium; `None` without a browser.
    async fn open(url: &str) -> Option<Self> {
        let browser = chromium()?;
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1440,900",
                "--remote-debugging-port=0",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        // Chromium names its DevTools endpoint on stderr.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_owned();
                }
            }
            panic!("chromium ended without a DevTools endpoint");
        })
        .await
        .expect("chromium's DevTools endpoint within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = endpoint
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("the page's target");
        let (ws, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .unwrap();
        Some(Self {
            ws,
            next_id: 1,
            _browser: child,
            _profile: profile,
        })
    }

    /// Calls a DevTools method; answers its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        loop {
            let Some(Ok(Message::Text(text))) = self.ws.next().await else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Runs `expression` in the page (awaiting a promise); answers its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page; answers its value.
    async fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.eval(expression).await;
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the page never showed {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `value` into the field `id` as a user would, and says so.
    async fn type_into(&mut self, id: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({id:?}); e.focus(); e.value = {value:?}; \
             e.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             e.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }})()"
        ))
        .await;
    }

    async fn click(&mut self, selector: &str) {
        self.eval(&format!(
            "document.querySelector({selector:?}).click(), true"
        ))
        .await;
    }
}

/// Pairs of players joining the 5+0 pool, one pair every 200 ms, and one
/// player waiting alone in 10+0, until the task is dropped.
fn traffic(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let (client, address) = (app.client.clone(), app.address.clone());
    let tokens: Vec<String> = (0..400).map(|i| app.token(&format!("p{i}"))).collect();
    let lone = app.token("lone");
    tokio::spawn(async move {
        let join = |token: &str, tc: &str| {
            client
                .post(format!("{address}/v1/matchmaking/queue"))
                .bearer_auth(token.to_owned())
                .json(&join_body(tc))
                .send()
        };
        let _ = join(&lone, "10+0").await;
        for pair in tokens.chunks(2) {
            for token in pair {
                let _ = join(token, "5+0").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The text of the 5+0 pool's cell `field`, or null before its row shows.
fn cell(field: &str) -> String {
    format!(
        "(() => {{ const c = document.querySelector('tr[data-pool=\"{POOL}\"] td[data-field=\"{field}\"]'); \
         return c ? c.textContent : null; }})()"
    )
}

#[tokio::test]
async fn the_dashboard_shows_live_figures_and_edits_a_policy_and_the_flags() {
    let app = spawn_app().await;
    // Served by the binary, with its assets, under a strict policy.
    let r = app.get("/dashboard").await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    for asset in ["/dashboard/app.js", "/dashboard/style.css"] {
        assert_eq!(app.get(asset).await.status(), StatusCode::OK, "{asset}");
    }
    let traffic = traffic(&app);
    let Some(mut page) = Page::open(&format!("{}/dashboard", app.address)).await else {
        traffic.abort();
        return;
    };
    // (The tab may still be on its first blank document a moment.)
    page.wait_for(
        "location.pathname === '/dashboard' && document.readyState === 'complete' \
         && !!document.getElementById('connect')",
        "the loaded page",
    )
    .await;
    // A player's token is refused; the board stays hidden.
    page.type_into("token", &app.token("alice")).await;
    page.click("#connect").await;
    page.wait_for(
        "document.getElementById('login-error').textContent",
        "the refusal",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('board').hidden").await,
        true
    );
    // The admin's token opens it, and is kept nowhere but the tab's memory.
    let admin = app.admin_token();
    page.type_into("token", &admin).await;
    page.click("#connect").await;
    page.wait_for("!document.getElementById('board').hidden", "the board")
        .await;
    let kept = page
        .eval(&format!(
            "localStorage.length + sessionStorage.length + document.cookie.length \
             + (location.href.includes({admin:?}) ? 1 : 0) + document.getElementById('token').value.length"
        ))
        .await;
    assert_eq!(kept, 0, "the token left the tab's memory");

    // The pool's numbers appear, then change as matches are made.
    let first = page
        .wait_for(
            &format!(
                "(() => {{ const t = {}; return t && Number(t) > 0 ? t : null; }})()",
                cell("rate")
            ),
            "a match rate",
        )
        .await;
    page.wait_for(
        &format!(
            "(() => {{ const t = {}; return t && t !== {first}; }})()",
            cell("rate")
        ),
        "the match rate change",
    )
    .await;
    page.wait_for(
        "document.querySelector('tr[data-pool=\"standard_10+0_rated_GLOBAL\"] td[data-field=\"waiting\"]')?.textContent === '1'",
        "the lone 10+0 player waiting",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelectorAll('svg.spark polyline').length > 0")
            .await,
        true
    );

    // Edit the pool's policy through the page.
    page.click(&format!("tr[data-pool=\"{POOL}\"]")).await;
    page.wait_for(
        "!document.getElementById('policy-form').hidden",
        "the policy form",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('policy-initial_rating_window').value")
            .await,
        "100"
    );
    page.type_into("policy-initial_rating_window", "250").await;
    page.type_into("policy-region_fallback_seconds", "30").await;
    page.type_into("policy-region_fallback_regions", "EU, NA")
        .await;
    page.click("#policy-save").await;
    page.wait_for(
        "document.getElementById('policy-status').textContent.startsWith('Saved')",
        "the policy saved",
    )
    .await;
    let policy: Value = app
        .admin_send(Method::GET, &format!("/internal/policies/t1/{POOL}"), None)
        .await
        .json()
        .await
        .unwrap();
    // Only what was changed is set; the regions in their canonical order.
    assert_eq!(
        policy["policy"],
        json!({
            "initial_rating_window": 250,
            "region_fallback_seconds": 30.0,
            "region_fallback_regions": ["NA", "EU"],
        }),
        "{policy}"
    );

    // Switch challenges off through the page.
    page.type_into("flags-tenant", "t1").await;
    page.click("#flags-load").await;
    page.wait_for(
        "!document.getElementById('flags-form').hidden",
        "the flags form",
    )
    .await;
    assert_eq!(
        page.eval("document.getElementById('flags-challenges').checked")
            .await,
        true
    );
    page.click("#flags-challenges").await;
    page.click("#flags-save").await;
    page.wait_for(
        "document.getElementById('flags-status').textContent.startsWith('Saved')",
        "the flags saved",
    )
    .await;
    let r = app.challenge_as(&app.token("alice"), "bob", "5+0").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let log: Value = app
        .get_as(&admin, "/internal/audit?kind=flags_changed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["events"][0]["detail"]["actor"], "t1/ops", "{log}");

    // The screenshot, with the pool selected, the forms filled and a few
    // samples in the charts.
    page.wait_for(
        &format!(
            "(document.querySelector('tr[data-pool=\"{POOL}\"] polyline')?.getAttribute('points') || '').split(' ').length >= 6"
        ),
        "six samples in the charts",
    )
    .await;
    let shot = page
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"),
        &png,
    )
    .unwrap();
    if let Ok(path) = std::env::var("DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    traffic.abort();
}
