//! docs/api.md must keep up with the code: every route of `ROUTES`, every state-rule id with
//! the status it maps to, and every record example must parse as a record and pass the static
//! rules. docs/operations.md's token-hash example must be the hash the node computes.

use rmledger_node::api::ROUTES;
use rmledger_node::append::rule_status;
use rmledger_node::config::token_hash;
use rmledger_schema::lifecycle::{self, RuleError};
use rmledger_schema::records::Record;

fn doc(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/");
    std::fs::read_to_string(format!("{path}{name}")).unwrap_or_else(|e| panic!("docs/{name}: {e}"))
}

/// The bodies of fenced blocks whose info string is exactly `info`.
fn fenced<'a>(text: &'a str, info: &str) -> Vec<&'a str> {
    let open = format!("```{info}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let end = body.find("\n```").expect("an unclosed code block");
        out.push(&body[..end]);
        rest = &body[end..];
    }
    out
}

#[test]
fn every_route_is_documented() {
    let api = doc("api.md");
    let missing: Vec<String> = ROUTES
        .iter()
        .map(|(method, path, _)| format!("`{} {path}`", method.to_uppercase()))
        .filter(|route| !api.contains(route.as_str()))
        .collect();
    assert!(missing.is_empty(), "docs/api.md lacks routes {missing:?}");
}

#[test]
fn every_rule_is_documented_with_its_status() {
    let api = doc("api.md");
    assert_eq!(RuleError::rules().len(), lifecycle::rules().len());
    let mut missing = Vec::new();
    for id in RuleError::rules() {
        if !api.contains(&format!("`{id}`")) {
            missing.push(id.to_string());
        }
    }
    assert!(missing.is_empty(), "docs/api.md lacks rule ids {missing:?}");
    for info in lifecycle::rules() {
        let status = rule_status(&RuleError {
            rule: info.id,
            detail: String::new(),
            kind: info.kind,
        });
        let row = format!("| `{}` | {status} |", info.id);
        assert!(
            api.contains(&row),
            "docs/api.md: the rule table needs the row `{row} …`"
        );
    }
}

#[test]
fn every_static_rule_is_documented() {
    let api = doc("api.md");
    for (id, refuses) in rmledger_schema::records::STATIC_RULES {
        let row = format!("| `{id}` | {refuses} |");
        assert!(
            api.contains(&row),
            "docs/api.md: the static rule table needs the row `{row}`"
        );
    }
}

#[test]
fn record_examples_parse_and_pass_static_rules() {
    let api = doc("api.md");
    let examples = fenced(&api, "json record");
    assert!(
        examples.len() >= 18,
        "only {} record examples",
        examples.len()
    );
    let mut kinds = std::collections::BTreeSet::new();
    for example in examples {
        let record: Record = serde_json::from_str(example)
            .unwrap_or_else(|e| panic!("example does not parse: {e}\n{example}"));
        record
            .validate()
            .unwrap_or_else(|e| panic!("example breaks a static rule: {e}\n{example}"));
        kinds.insert(record.kind().name());
    }
    for kind in [
        "Enrol",
        "KeyAdded",
        "KeyRevoked",
        "MemberSuspended",
        "MemberReinstated",
        "BatchRegistered",
        "CertificateRevised",
        "ValueVerification",
        "Suspended",
        "Reinstated",
        "Recalled",
        "Withdrawn",
        "Shipped",
        "Received",
        "Opened",
        "Used",
        "Disposed",
    ] {
        assert!(kinds.contains(kind), "docs/api.md has no {kind} example");
    }
}

#[test]
fn token_hash_example_matches_the_node() {
    let ops = doc("operations.md");
    let token = "5f0c8a3e9b2d4f6071829a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f";
    let hash = data_encoding::HEXLOWER.encode(&token_hash(token));
    assert!(
        ops.contains(token) && ops.contains(&hash),
        "docs/operations.md must show token {token} with its hash {hash}"
    );
}
