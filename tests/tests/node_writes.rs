//! `POST /v1/records` against a real node: every error class (status, class, rule or field, and
//! nothing written), and a certificate's life on one all-roles registrar node.

use rmledger_schema::entry::Entry;
use rmledger_schema::ids::EntryId;
use rmledger_schema::records::{Enrol, Received, Record};
use rmledger_schema::testkit;
use rmledger_tests::records::{self, json};
use rmledger_tests::{Api, ApiError, ORG, Resp, TestNode, expect_error};
use serde_json::{Value, json};

/// Posts `body` with `authorization`, expects the error, and checks no chain grew.
async fn refused_raw(
    api: &Api,
    body: Vec<u8>,
    authorization: Option<&str>,
    status: u16,
    class: &str,
) -> ApiError {
    let before = api.chain_sizes().await;
    let resp: Resp = api.post_raw(body, authorization).await;
    let error = expect_error(&resp, status, class);
    assert_eq!(
        api.chain_sizes().await,
        before,
        "a refused write ({status} {class}) changed the chains"
    );
    error
}

/// Posts `record` with the operator token, expects the error, and checks no chain grew.
async fn refused(api: &Api, record: &Value, status: u16, class: &str) -> ApiError {
    let bearer = format!("Bearer {}", api.token());
    refused_raw(
        api,
        serde_json::to_vec(record).unwrap(),
        Some(&bearer),
        status,
        class,
    )
    .await
}

async fn refused_rule(api: &Api, record: &Value, status: u16, class: &str, rule: &str) {
    let error = refused(api, record, status, class).await;
    assert_eq!(
        error.rule.as_deref(),
        Some(rule),
        "rule of {status} {class}: {error:?}"
    );
}

fn anchor(n: u8) -> Value {
    records::anchor("nclab", u64::from(n) + 1, [n; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_write_nothing() {
    let node = TestNode::started();
    let api = node.api();
    let bearer = format!("Bearer {}", node.token());
    // One accepted write first, so "nothing written" is checked against a non-empty chain.
    let first = api.write(&anchor(1)).await;
    assert_eq!((first.chain.as_str(), first.seq), (ORG, 0));
    let body = serde_json::to_vec(&anchor(2)).unwrap();

    // 401: no token, an unknown token, another scheme.
    refused_raw(api, body.clone(), None, 401, "unauthorized").await;
    refused_raw(
        api,
        body.clone(),
        Some("Bearer 00000000000000000000000000000000"),
        401,
        "unauthorized",
    )
    .await;
    refused_raw(
        api,
        body.clone(),
        Some(&format!("Basic {}", node.token())),
        401,
        "unauthorized",
    )
    .await;

    // 400: not JSON, trailing data, an unknown record, an unknown field, a wrong type.
    refused_raw(
        api,
        b"{\"Anchor\": ".to_vec(),
        Some(&bearer),
        400,
        "malformed",
    )
    .await;
    let mut trailing = body.clone();
    trailing.extend_from_slice(b" {}");
    refused_raw(api, trailing, Some(&bearer), 400, "malformed").await;
    refused(api, &json!({"Bogus": {"x": 1}}), 400, "malformed").await;
    let mut unknown_field = anchor(3);
    unknown_field["Anchor"]["bogus"] = json!(1);
    let error = refused(api, &unknown_field, 400, "malformed").await;
    assert!(
        error.detail.contains("bogus"),
        "the detail names the unknown field: {error:?}"
    );
    let mut wrong_type = anchor(4);
    wrong_type["Anchor"]["size"] = json!("four");
    let error = refused(api, &wrong_type, 400, "malformed").await;
    assert_eq!(error.field.as_deref(), Some("Anchor.size"), "{error:?}");
    let mut bad_id = records::suspend(first.entry_id(), "x");
    bad_id["Suspended"]["cert"] = json!("ABCD");
    let error = refused(api, &bad_id, 400, "malformed").await;
    assert_eq!(error.field.as_deref(), Some("Suspended.cert"), "{error:?}");

    // 413: a body over the 256 KiB default (valid JSON, padded with spaces).
    let mut big = serde_json::to_vec(&anchor(5)).unwrap();
    big.resize(300 * 1024, b' ');
    refused_raw(api, big, Some(&bearer), 413, "too_large").await;
    // Just under the limit is accepted (whitespace is fine JSON).
    let mut padded = serde_json::to_vec(&anchor(6)).unwrap();
    padded.resize(200 * 1024, b' ');
    api.post_raw(padded, Some(&bearer)).await.expect_status(201);

    // 422: static validation names the field and the rule.
    let mut no_u = records::soil("2026-001");
    no_u.values[0].uncertainty = None;
    let error = refused(api, &records::register(no_u), 422, "invalid").await;
    assert_eq!(error.field.as_deref(), Some("values[0].uncertainty"));
    assert_eq!(
        error.rule.as_deref(),
        Some("certified-value-without-uncertainty"),
        "{error:?}"
    );
    assert!(
        error.detail.contains("needs an expanded uncertainty"),
        "{error:?}"
    );
    let mut zero_u = records::soil("2026-001");
    zero_u.values[0].uncertainty.as_mut().unwrap().expanded = testkit::decimal("0");
    let error = refused(api, &records::register(zero_u), 422, "invalid").await;
    assert_eq!(
        error.field.as_deref(),
        Some("values[0].uncertainty.expanded")
    );
    assert_eq!(error.rule.as_deref(), Some("uncertainty-not-positive"));
    let error = refused(
        api,
        &records::suspend(first.entry_id(), "  "),
        422,
        "invalid",
    )
    .await;
    assert_eq!(error.field.as_deref(), Some("reason"));
    assert_eq!(error.rule.as_deref(), Some("text-empty"));

    // 404: a certificate nobody registered.
    let unknown = EntryId([7; 32]);
    refused(api, &records::suspend(unknown, "check"), 404, "not_found").await;
    refused(api, &records::verify_cd(unknown), 404, "not_found").await;
    let error = refused(
        api,
        &records::ship(unknown, "nclab", "S-0001"),
        404,
        "not_found",
    )
    .await;
    eprintln!("404 for an unknown certificate: {error:?}");

    // 404: an anchor entry is not a certificate.
    refused(
        api,
        &records::suspend(first.entry_id(), "not a cert"),
        404,
        "not_found",
    )
    .await;

    // Only the two accepted writes are on the chain.
    assert_eq!(api.chain_size(ORG).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_life_and_its_refusals() {
    let mut node = TestNode::started();
    let api = node.api().clone();

    // Enrol a lab to ship to (the registrar's chain is this node's chain).
    let federation = testkit::TestFederation::with_members();
    let enrol_nclab = federation
        .chain("jxim")
        .iter()
        .find_map(|e| match e.record() {
            Record::Enrol(enrol) if enrol.org.as_str() == "nclab" => Some(enrol.clone()),
            _ => None,
        })
        .expect("testkit enrols nclab");
    let enrolled = api.write(&json(Record::Enrol(enrol_nclab.clone()))).await;
    assert_eq!((enrolled.chain.as_str(), enrolled.seq), (ORG, 0));
    let members = api.get_json("/v1/members").await;
    let orgs: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["org"].as_str().unwrap())
        .collect();
    assert!(
        orgs.contains(&"jxim") && orgs.contains(&"nclab"),
        "{members}"
    );
    // Enrolling the same org twice is a membership conflict.
    let error = refused(&api, &json(Record::Enrol(enrol_nclab)), 409, "conflict").await;
    eprintln!("re-enrol: {error:?}");
    // An Enrol without keys is static nonsense.
    let no_keys = json(Record::Enrol(Enrol {
        org: testkit::org("other-lab"),
        keys: Vec::new(),
        name: "Other".into(),
        roles: vec![rmledger_schema::records::Role::Lab],
    }));
    let error = refused(&api, &no_keys, 422, "invalid").await;
    assert_eq!(error.field.as_deref(), Some("keys"));

    // Register the soil certificate.
    let registered = api
        .write(&records::register(records::soil("2026-001")))
        .await;
    assert_eq!(registered.seq, 1);
    let cert = registered.entry_id();
    refused_rule(
        &api,
        &records::register(records::soil("2026-001")),
        409,
        "conflict",
        "duplicate-registration",
    )
    .await;

    // The institute verifies Cd: 0.23 ± 0.02 against 0.21 ± 0.01 (k = 2): En ≈ 0.89, a pass.
    let verified = api.write(&records::verify_cd(cert)).await;
    assert_eq!(verified.seq, 2);

    // Shipping to itself is refused; shipping three units to the lab is fine, once.
    refused_rule(
        &api,
        &records::ship(cert, ORG, "S-0001..S-0003"),
        409,
        "conflict",
        "ship-to-self",
    )
    .await;
    let shipped = api
        .write(&records::ship(cert, "nclab", "S-0001..S-0003"))
        .await;
    assert_eq!(shipped.seq, 3);
    refused_rule(
        &api,
        &records::ship(cert, "nclab", "S-0003..S-0004"),
        409,
        "conflict",
        "unit-already-shipped",
    )
    .await;
    refused_rule(
        &api,
        &records::ship(cert, "nclab", "S-0101"),
        404,
        "not_found",
        "unit-not-produced",
    )
    .await;
    // This node has the lab role too: receiving units never shipped, or shipped elsewhere.
    let receive = |serials: &str| {
        json(Record::Received(Received {
            cert,
            from: testkit::org(ORG),
            serials: testkit::serials(serials),
        }))
    };
    refused_rule(
        &api,
        &receive("S-0050"),
        409,
        "conflict",
        "unit-not-shipped",
    )
    .await;
    refused_rule(
        &api,
        &receive("S-0001"),
        403,
        "forbidden",
        "unit-shipped-elsewhere",
    )
    .await;

    // Suspend, refuse a second suspension and shipping while suspended, reinstate.
    let suspended = api
        .write(&records::suspend(cert, "Cd drift under investigation"))
        .await;
    refused_rule(
        &api,
        &records::suspend(cert, "again"),
        409,
        "conflict",
        "already-suspended",
    )
    .await;
    refused_rule(
        &api,
        &records::ship(cert, "nclab", "S-0010"),
        409,
        "conflict",
        "certificate-suspended",
    )
    .await;
    let reinstated = api
        .write(&records::reinstate(cert, "drift not confirmed"))
        .await;
    refused_rule(
        &api,
        &records::reinstate(cert, "again"),
        409,
        "conflict",
        "not-suspended",
    )
    .await;

    // Recall: shipping is refused from then on.
    let recalled = api
        .write(&records::recall(cert, "homogeneity failure"))
        .await;
    assert_eq!(recalled.seq, 6);
    refused_rule(
        &api,
        &records::ship(cert, "nclab", "S-0010..S-0012"),
        409,
        "conflict",
        "certificate-recalled",
    )
    .await;
    refused_rule(
        &api,
        &records::recall(cert, "again"),
        409,
        "conflict",
        "already-recalled",
    )
    .await;

    // The state the node reports.
    let state = api
        .get_json(&format!("/v1/certificates/{}", cert.to_hex()))
        .await;
    assert_eq!(state["id"].as_str(), Some(cert.to_hex().as_str()));
    assert_eq!(state["status"].as_str(), Some("recalled"), "{state}");
    let life = &state["state"];
    let timeline: Vec<(&str, &str)> = life["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["entry"].as_str().unwrap()))
        .collect();
    assert_eq!(
        timeline,
        vec![
            ("BatchRegistered", registered.id.as_str()),
            ("ValueVerification", verified.id.as_str()),
            ("Shipped", shipped.id.as_str()),
            ("Suspended", suspended.id.as_str()),
            ("Reinstated", reinstated.id.as_str()),
            ("Recalled", recalled.id.as_str()),
        ],
        "the timeline names each accepted entry, in order"
    );
    assert_eq!(life["revisions"].as_array().map(Vec::len), Some(1));
    let verification = &life["verifications"][0];
    assert_eq!(verification["entry"].as_str(), Some(verified.id.as_str()));
    assert_eq!(verification["comparison"]["verdict"].as_str(), Some("pass"));
    let en = verification["comparison"]["en"].as_f64().expect("En");
    assert!(
        (en - 0.894).abs() < 0.001,
        "En = 0.02 / sqrt(0.01² + 0.02²): {en}"
    );
    assert_eq!(life["units"].as_object().map(|u| u.len()), Some(100));
    for serial in ["S-0001", "S-0002", "S-0003"] {
        assert_eq!(
            life["units"][serial]["shipped_to"].as_str(),
            Some("nclab"),
            "{serial}"
        );
    }
    assert!(life["units"]["S-0004"]["shipped_to"].is_null());
    assert_eq!(
        life["recalled"]["entry"].as_str(),
        Some(recalled.id.as_str())
    );
    let listed = api
        .get_json("/v1/certificates?code=GBW(E)082345&batch=2026-001")
        .await;
    assert!(
        listed.to_string().contains(&cert.to_hex()),
        "certificate list by code and batch: {listed}"
    );

    // Everything accepted is on the chain, in order, and survives a restart.
    let ids: Vec<String> = [&enrolled, &registered, &verified, &shipped]
        .iter()
        .map(|w| w.id.clone())
        .collect();
    assert_eq!(api.chain_size(ORG).await, 7);
    let api = node.restart().clone();
    assert_eq!(api.chain_size(ORG).await, 7);
    for (seq, id) in ids.iter().enumerate() {
        let bytes = api.entry(ORG, seq as u64).await.expect("entry");
        assert_eq!(&Entry::id_of(&bytes).unwrap().to_hex(), id);
    }
    // Rules still hold after the restart (the state is rebuilt from the ledger).
    refused_rule(
        &api,
        &records::ship(cert, "nclab", "S-0020"),
        409,
        "conflict",
        "certificate-recalled",
    )
    .await;

    // A suspension is judged when it would take effect: suspending twice is a conflict, and
    // the node still starts afterwards (the stored registrar chain folds cleanly).
    let suspend = serde_json::json!({"MemberSuspended": {"org": "nclab", "reason": "audit"}});
    api.write(&suspend).await;
    let error = refused(&api, &suspend, 409, "conflict").await;
    assert_eq!(error.rule.as_deref(), Some("membership"), "{error:?}");
    let reinstate = serde_json::json!({"MemberReinstated": {"org": "nclab", "reason": "cleared"}});
    api.write(&reinstate).await;
    let error = refused(&api, &reinstate, 409, "conflict").await;
    assert_eq!(error.rule.as_deref(), Some("membership"), "{error:?}");
    let api = node.restart().clone();
    assert_eq!(api.chain_size(ORG).await, 9);

    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_routes() {
    let node = TestNode::started();
    let api = node.api();
    let health = api.get("/healthz").await;
    health.expect_status(200);
    // Errors the framework answers itself still have the JSON shape.
    let bad_seq = api
        .get(&format!("/v1/chains/{ORG}/entries/not-a-number"))
        .await;
    bad_seq.expect_status(400);
    assert_eq!(bad_seq.json()["error"], "malformed", "{:?}", bad_seq.json());
    let bad_query = api.get(&format!("/v1/chains/{ORG}/entries?from=x")).await;
    bad_query.expect_status(400);
    assert_eq!(bad_query.json()["error"], "malformed");
    let openapi = api.get_json("/openapi.json").await;
    assert!(
        openapi["paths"]
            .as_object()
            .is_some_and(|p| p.contains_key("/v1/records")),
        "openapi paths: {openapi}"
    );
    let federation = api.get_json("/v1/federation").await;
    assert_eq!(
        federation["federation_id"].as_str(),
        Some(node.report().federation_id.as_str())
    );
    assert_eq!(federation["registrar"].as_str(), Some(ORG));
    let genesis = data_encoding::BASE64
        .decode(federation["genesis"].as_str().unwrap().as_bytes())
        .expect("genesis is standard base64");
    assert_eq!(
        genesis,
        std::fs::read(&node.report().genesis_file).unwrap(),
        "the served genesis is the file's bytes"
    );
    assert_eq!(
        rmledger_schema::ids::FederationId::of(&genesis),
        node.federation_id()
    );
    let members = api.get_json("/v1/members").await;
    let jxim = &members[0];
    assert_eq!(jxim["org"].as_str(), Some(ORG));
    assert_eq!(
        jxim["keys"][0]["public_key"].as_str(),
        Some(node.report().public_key.as_str())
    );
    assert_eq!(
        jxim["keys"][0]["kid"].as_str(),
        Some(node.report().key_id.as_str())
    );

    let written = api.write(&anchor(9)).await;
    let entry = api.get(&format!("/v1/chains/{ORG}/entries/0")).await;
    entry.expect_status(200);
    assert!(
        entry.content_type.starts_with("application/cbor"),
        "entry content type {:?}",
        entry.content_type
    );
    assert_eq!(Entry::id_of(&entry.body).unwrap(), written.entry_id());
    let metrics = api.get("/metrics").await;
    metrics.expect_status(200);
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "{}",
        metrics.content_type
    );
    assert!(
        metrics.text().lines().any(|l| l.starts_with("# TYPE ")),
        "Prometheus text: {}",
        metrics.text()
    );
    // Unknown routes and unknown chains are JSON 404s.
    expect_error(&api.get("/v1/nothing").await, 404, "not_found");
    expect_error(
        &api.get("/v1/chains/nobody/entries/0").await,
        404,
        "not_found",
    );
    expect_error(
        &api.get("/v1/chains/jxim/entries/99").await,
        404,
        "not_found",
    );
}

/// Posts `record` from `n` tasks at once; returns the statuses and the rules of refusals.
async fn race(api: &Api, record: &Value, n: usize) -> (Vec<u16>, Vec<Option<String>>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (api, record) = (api.clone(), record.clone());
        tasks.spawn(async move { api.post_record(&record).await });
    }
    let (mut statuses, mut rules) = (Vec::new(), Vec::new());
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.expect("racing writer");
        statuses.push(resp.status);
        if resp.status != 201 {
            rules.push(
                serde_json::from_slice::<ApiError>(&resp.body)
                    .ok()
                    .and_then(|e| e.rule),
            );
        }
    }
    (statuses, rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writes_are_judged_one_after_another() {
    let node = TestNode::started();
    let api = node.api().clone();
    let federation = testkit::TestFederation::with_members();
    let enrol_nclab = federation
        .chain("jxim")
        .iter()
        .find_map(|e| match e.record() {
            Record::Enrol(enrol) if enrol.org.as_str() == "nclab" => Some(enrol.clone()),
            _ => None,
        })
        .expect("testkit enrols nclab");
    api.write(&json(Record::Enrol(enrol_nclab))).await;

    // Eight identical registrations at once: one is the registration, the rest duplicates.
    let (statuses, rules) = race(&api, &records::register(records::soil("2026-009")), 8).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "exactly one registration is accepted: {statuses:?} {rules:?}"
    );
    assert!(
        rules
            .iter()
            .all(|r| r.as_deref() == Some("duplicate-registration")),
        "{statuses:?} {rules:?}"
    );
    let listed = api
        .get_json("/v1/certificates?code=GBW(E)082345&batch=2026-009")
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let cert = EntryId::from_hex(listed[0]["id"].as_str().unwrap()).unwrap();

    // Eight shipments of the same unit at once: it leaves once.
    let (statuses, rules) = race(&api, &records::ship(cert, "nclab", "S-0050"), 8).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "a unit ships once: {statuses:?} {rules:?}"
    );
    assert!(
        rules
            .iter()
            .all(|r| r.as_deref() == Some("unit-already-shipped")),
        "{statuses:?} {rules:?}"
    );
    // Suspensions racing: one suspends, the others find it suspended.
    let (statuses, rules) = race(&api, &records::suspend(cert, "racing"), 6).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?} {rules:?}"
    );
    assert!(
        rules
            .iter()
            .all(|r| r.as_deref() == Some("already-suspended")),
        "{statuses:?} {rules:?}"
    );
    // Enrol + registration + shipment + suspension.
    assert_eq!(api.chain_size(ORG).await, 4);
}

/// Posts a batch, expects the error, and checks no chain grew.
async fn batch_refused(api: &Api, records: &[Value], status: u16, class: &str) -> ApiError {
    let before = api.chain_sizes().await;
    let error = expect_error(&api.post_batch(records).await, status, class);
    assert_eq!(
        api.chain_sizes().await,
        before,
        "a refused batch ({status} {class}) changed the chains"
    );
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writes_are_all_or_none() {
    let mut node = TestNode::started();
    let api = node.api().clone();
    let api = &api;

    // Accepted: consecutive entries, answered in order, each readable at its seq.
    let resp = api
        .post_batch(&[
            anchor(1),
            records::register(records::soil("b-1")),
            anchor(2),
        ])
        .await;
    resp.expect_status(201);
    let written: Vec<rmledger_tests::Written> = serde_json::from_slice(&resp.body).unwrap();
    let seqs: Vec<u64> = written.iter().map(|w| w.seq).collect();
    assert_eq!(seqs, [0, 1, 2], "{written:?}");
    assert_eq!(
        api.chain(ORG).await.unwrap().head.as_deref(),
        Some(written[2].id.as_str())
    );
    let cert = written[1].entry_id();
    api.get(&format!("/v1/certificates/{}", cert.to_hex()))
        .await
        .expect_status(200);

    // Refused by a state rule part-way: the record is named and nothing is written, not even
    // the records before it.
    let error = batch_refused(
        api,
        &[
            anchor(3),
            records::register(records::soil("b-2")),
            records::register(records::soil("b-1")),
        ],
        409,
        "conflict",
    )
    .await;
    assert_eq!(error.index, Some(2), "{error:?}");
    assert_eq!(
        error.rule.as_deref(),
        Some("duplicate-registration"),
        "{error:?}"
    );
    // So b-2 is still free to register.
    api.write(&records::register(records::soil("b-2"))).await;

    // A static rule and an unknown certificate, named by index.
    let mut zero_u = records::soil("b-3");
    zero_u.values[0].uncertainty.as_mut().unwrap().expanded = testkit::decimal("0");
    let error = batch_refused(api, &[anchor(4), records::register(zero_u)], 422, "invalid").await;
    assert_eq!(error.index, Some(1), "{error:?}");
    assert_eq!(error.rule.as_deref(), Some("uncertainty-not-positive"));
    let error = batch_refused(
        api,
        &[records::suspend(EntryId([7; 32]), "check"), anchor(5)],
        404,
        "not_found",
    )
    .await;
    assert_eq!(error.index, Some(0), "{error:?}");
    // A batch of one is still named by index; the same record alone is not.
    let unknown = records::suspend(EntryId([7; 32]), "check");
    let error = batch_refused(api, std::slice::from_ref(&unknown), 404, "not_found").await;
    assert_eq!(error.index, Some(0), "{error:?}");
    let error = refused(api, &unknown, 404, "not_found").await;
    assert_eq!(error.index, None, "{error:?}");

    // A state change undone with its batch: the certificate is not left suspended.
    let error = batch_refused(
        api,
        &[
            records::suspend(cert, "stability check pending"),
            records::suspend(EntryId([8; 32]), "check"),
        ],
        404,
        "not_found",
    )
    .await;
    assert_eq!(error.index, Some(1), "{error:?}");
    let state = api
        .get_json(&format!("/v1/certificates/{}", cert.to_hex()))
        .await;
    assert_eq!(state["status"].as_str(), Some("valid"), "{state}");

    // Malformed elements are named by index and JSON path; the size is bounded.
    let error = batch_refused(
        api,
        &[anchor(6), json!({"Bogus": {"x": 1}})],
        400,
        "malformed",
    )
    .await;
    assert_eq!(error.index, Some(1), "{error:?}");
    assert!(
        error.field.as_deref().unwrap_or("").starts_with("[1]"),
        "{error:?}"
    );
    let error = batch_refused(api, &[], 422, "invalid").await;
    assert_eq!(error.rule.as_deref(), Some("batch-size"), "{error:?}");
    let many: Vec<Value> = (0..1001).map(|n| anchor((n % 200) as u8)).collect();
    let error = batch_refused(api, &many, 422, "invalid").await;
    assert_eq!(
        (error.rule.as_deref(), error.index),
        (Some("batch-size"), None)
    );
    let bearer = format!("Bearer {}", api.token());
    let resp = api
        .try_post_to(
            "/v1/records/batch",
            serde_json::to_vec(&anchor(7)).unwrap(),
            Some(&bearer),
        )
        .await
        .unwrap();
    expect_error(&resp, 400, "malformed");
    let resp = api
        .try_post_to(
            "/v1/records/batch",
            serde_json::to_vec(&[anchor(7)]).unwrap(),
            None,
        )
        .await
        .unwrap();
    expect_error(&resp, 401, "unauthorized");

    // Four accepted writes: the first batch's three and b-2.
    assert_eq!(api.chain_size(ORG).await, 4);
    node.stop();
    node.assert_fsck_ok();
}

/// Refused batches racing accepted writes in the same group commit: what a refused batch
/// touched (a registration, a certificate's state) must not leak to the writes checked after
/// it. Each round sends a batch that registers a batch code and suspends a certificate and is
/// then refused, together with single writes doing the same; every single write must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_leave_no_trace_in_a_shared_commit() {
    let mut node = TestNode::started();
    let api = node.api().clone();
    let api = &api;
    for round in 0..8 {
        let cert = api
            .write(&records::register(records::soil(&format!("r-{round}"))))
            .await
            .entry_id();
        let code = format!("x-{round}");
        let doomed = [
            records::register(records::soil(&code)),
            records::suspend(cert, "stability check pending"),
            records::suspend(EntryId([9; 32]), "unknown"),
        ];
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let api = api.clone();
            let doomed = doomed.to_vec();
            tasks.push(tokio::spawn(
                async move { api.post_batch(&doomed).await.status },
            ));
        }
        let single_register = {
            let api = api.clone();
            let record = records::register(records::soil(&code));
            tokio::spawn(async move { api.post_record(&record).await })
        };
        let single_suspend = {
            let api = api.clone();
            tokio::spawn(async move { api.post_record(&records::suspend(cert, "drift")).await })
        };
        for task in tasks {
            // 404 for the unknown certificate, or 409 if a single write came first.
            let status = task.await.unwrap();
            assert!(status == 404 || status == 409, "round {round}: {status}");
        }
        let register = single_register.await.unwrap();
        assert_eq!(register.status, 201, "round {round}: {}", register.text());
        let suspend = single_suspend.await.unwrap();
        assert_eq!(suspend.status, 201, "round {round}: {}", suspend.text());
    }
    // Per round: the certificate, the registration and the suspension.
    assert_eq!(api.chain_size(ORG).await, 24);
    node.stop();
    node.assert_fsck_ok();
}
