//! Every route the router serves is in `/openapi.json`, and every documented route is served:
//! the two come from one table (`api::ROUTES`), and this test holds the router to it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rmledger_node::api::{AppState, ROUTES, openapi_document, router};
use rmledger_node::append::Writer;
use rmledger_node::config::{Config, Limits};
use rmledger_node::ledger::Ledger;
use rmledger_node::metrics::Metrics;
use rmledger_node::storage::{Store, StoreOptions};
use rmledger_schema::testkit::TestFederation;
use tower::ServiceExt;

fn concrete(path: &str) -> String {
    path.replace("{chain}", "jxim")
        .replace("{seq}", "0")
        .replace("{id}", &"0".repeat(64))
        .replace("{serial}", "S-0001")
}

#[tokio::test]
async fn every_route_is_documented_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let federation = TestFederation::new();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let org = federation.genesis.registrar().clone();
    let ledger = Arc::new(Ledger::open(store, federation.genesis.clone(), org.clone()).unwrap());
    let metrics = Arc::new(Metrics::default());
    let key = federation.keys[&org].clone();
    let (writer, _task) = Writer::spawn(ledger.clone(), key, metrics.clone());
    let config = Config {
        org: org.to_string(),
        data_dir: dir.path().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        key_file: "unused".into(),
        genesis_file: "unused".into(),
        operators: Vec::new(),
        peers: Vec::new(),
        limits: Limits::default(),
        replication_interval_ms: 2000,
        replication_max_backoff_ms: 30_000,
        anchor_interval_seconds: 60,
        audit: Default::default(),
    };
    let audit = Arc::new(rmledger_node::audit::NodeAudit::new(&config));
    let config = Arc::new(config);
    let replication = rmledger_node::replicate::Replication::new(
        ledger.clone(),
        writer.clone(),
        metrics.clone(),
        config.clone(),
    )
    .unwrap();
    let app = router(AppState {
        ledger,
        writer,
        config,
        metrics,
        replication,
        audit,
    });

    let document = openapi_document();
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        ROUTES.len()
    );
    for (method, path, _) in ROUTES {
        assert!(
            paths[*path].get(*method).is_some(),
            "{method} {path} missing from /openapi.json"
        );
        let request = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
            .uri(concrete(path))
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("no such route"),
            "{method} {path} is documented but not served"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    let unknown = Request::get("/v1/nothing-here")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(unknown).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
