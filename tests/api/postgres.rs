//! The API on the PostgreSQL durable store: the same flows as on SQLite,
//! end to end (skipped without a server, failing in CI).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, join_body, spawn_app_with};
use crate::support::PgSchema;

#[tokio::test]
async fn queue_matches_challenges_and_ratings_work_on_postgres() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let url = schema.url();
    let app = spawn_app_with(|s| s.database_url = Some(url)).await;
    let (a, b, c) = (app.token("alice"), app.token("bob"), app.token("carol"));

    let r = app
        .put_ratings(&app.admin_token(), "t1", "alice", &json!({ "blitz": 1550 }))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let ia = app.join_ok(&a, &join_body("5+0")).await;
    app.join_ok(&b, &join_body("5+0")).await;
    let status = app.wait_for_result(&a, &ia).await;
    assert_eq!(status["status"], "MATCHED");
    let game = status["game_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.active(&b).await["match"]["opponent"]["rating_snapshot"]["rating"],
        1550
    );
    assert_eq!(
        error_code(app.join(&a, &join_body("5+0")).await).await,
        "ACTIVE_GAME_EXISTS"
    );
    assert_eq!(
        app.game_finished(&app.admin_token(), &game).await.status(),
        StatusCode::OK
    );

    let created = app
        .client
        .post(format!("{}/v1/matchmaking/challenges", app.address))
        .bearer_auth(&c)
        .json(&json!({ "opponent_user_id": "alice", "time_control": "3+0", "mode": "casual" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<serde_json::Value>().await.unwrap()["challenge_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let accepts = (0..10).map(|_| {
        app.client
            .post(format!(
                "{}/v1/matchmaking/challenges/{id}/accept",
                app.address
            ))
            .bearer_auth(&a)
            .send()
    });
    let answers = futures::future::join_all(accepts).await;
    let ok = answers
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "exactly one accept wins on PostgreSQL too");
    assert_eq!(
        app.active(&c).await["match"]["opponent"]["user_id"],
        "alice"
    );
}
