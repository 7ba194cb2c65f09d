//! Bad input to the control service, each answered with a clear status and a JSON
//! error body; the service keeps serving afterwards.

mod common;

use common::{Stack, SECRET};
use serde_json::json;

const PATH: &str = "/colibri/v2/conferences";

fn create(id: &str) -> serde_json::Value {
    json!({"meeting-id": id, "create": true, "endpoints": [{"id": "e1", "create": true}]})
}

#[test]
fn each_bad_request_gets_its_status_and_reason() {
    let stack = Stack::new(true);
    stack.wait_healthy();
    let cases: Vec<(&str, u16, &str, common::Response)> = vec![
        ("malformed JSON", 400, "BAD_REQUEST", stack.request("POST", PATH, Some("{\"meeting-id\": "), Some(SECRET), Some("application/json"))),
        ("wrong types", 422, "BAD_REQUEST", stack.focus("POST", PATH, &json!({"meeting-id": 7, "endpoints": "x"}))),
        ("not JSON content type", 415, "BAD_REQUEST", stack.request("POST", PATH, Some("{}"), Some(SECRET), Some("text/plain"))),
        ("missing bearer", 401, "UNAUTHORIZED", stack.request("POST", PATH, Some("{}"), None, Some("application/json"))),
        ("wrong bearer", 401, "UNAUTHORIZED", stack.request("POST", PATH, Some("{}"), Some("not-the-secret"), Some("application/json"))),
        ("unknown meeting-id", 404, "CONFERENCE_NOT_FOUND", stack.focus("PATCH", &format!("{PATH}/nope"), &json!({"endpoints": []}))),
        ("no meeting-id", 400, "BAD_REQUEST", stack.focus("POST", PATH, &json!({"create": true}))),
        ("relays", 501, "FEATURE_NOT_IMPLEMENTED", stack.focus("POST", PATH, &json!({"meeting-id": "r", "create": true, "relays": [{"id": "x"}]}))),
        ("bad ICE password", 400, "BAD_REQUEST", stack.focus("POST", PATH, &json!({"meeting-id": "p", "create": true, "endpoints": [{"id": "e", "create": true, "transport": {"transport": {"ufrag": "abcd", "pwd": "short"}}}]}))),
        ("oversized body", 413, "PAYLOAD_TOO_LARGE", stack.request("POST", PATH, Some(&format!("{{\"meeting-id\":\"{}\"}}", "x".repeat(300_000))), Some(SECRET), Some("application/json"))),
    ];
    for (what, status, reason, r) in cases {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.reason(), reason, "{what}: {}", r.body);
        assert!(!r.json()["message"].as_str().unwrap().is_empty(), "{what}");
    }
    // Nothing above created anything.
    assert_eq!(stack.stats()["total_conferences_created"], 0);

    // Duplicates.
    assert_eq!(stack.focus("POST", PATH, &create("dup")).status, 200);
    let r = stack.focus("POST", PATH, &create("dup"));
    assert_eq!(
        (r.status, r.reason().as_str()),
        (409, "CONFERENCE_ALREADY_EXISTS")
    );
    let r = stack.focus(
        "PATCH",
        &format!("{PATH}/dup"),
        &json!({"endpoints": [{"id": "e1", "create": true}]}),
    );
    assert_eq!(
        (r.status, r.reason().as_str()),
        (409, "ENDPOINT_ALREADY_EXISTS")
    );
    let r = stack.focus(
        "PATCH",
        &format!("{PATH}/dup"),
        &json!({"endpoints": [{"id": "ghost", "force-mute": {"audio": true}}]}),
    );
    assert_eq!((r.status, r.reason().as_str()), (404, "UNKNOWN_ENDPOINT"));
    let r = stack.focus(
        "PATCH",
        &format!("{PATH}/dup"),
        &json!({"endpoints": [{"id": "ghost", "expire": true}]}),
    );
    assert_eq!((r.status, r.reason().as_str()), (404, "UNKNOWN_ENDPOINT"));
    let r = stack.focus(
        "PATCH",
        &format!("{PATH}/dup"),
        &json!({"meeting-id": "other", "endpoints": []}),
    );
    assert_eq!(r.status, 400);

    // Drain, then create: refused; existing conferences go on; undrain: accepted.
    let r = stack.request("POST", "/colibri/drain/enable", None, Some(SECRET), None);
    assert_eq!(r.status, 200);
    assert_eq!(stack.get("/colibri/drain").json()["drain"], true);
    let r = stack.focus("POST", PATH, &create("while-draining"));
    assert_eq!((r.status, r.reason().as_str()), (503, "GRACEFUL_SHUTDOWN"));
    let r = stack.focus(
        "PATCH",
        &format!("{PATH}/dup"),
        &json!({"endpoints": [{"id": "e2", "create": true}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        stack
            .request("POST", "/colibri/drain/disable", None, Some(SECRET), None)
            .status,
        200
    );
    assert_eq!(
        stack.focus("POST", PATH, &create("after-drain")).status,
        200
    );
    assert_eq!(stack.stats()["drain"], false);

    // Ops routes need the secret too; reads do not.
    assert_eq!(
        stack
            .request("POST", "/colibri/drain/enable", None, None, None)
            .status,
        401
    );
    assert_eq!(
        stack
            .request(
                "POST",
                "/colibri/shutdown",
                Some("{\"graceful-shutdown\": \"yes\"}"),
                Some(SECRET),
                Some("application/json")
            )
            .status,
        422
    );
    assert_eq!(stack.get("/about/health").status, 200);
    let v = stack.get("/about/version").json();
    assert_eq!(v["name"], "viaduct");
    let doc = stack.get("/openapi.json").json();
    assert!(doc["paths"]["/colibri/v2/conferences/{meeting-id}"]["patch"].is_object());
    assert_eq!(stack.get("/no/such/route").status, 404);
}

#[test]
fn without_a_bridge_health_fails_and_allocation_is_refused() {
    let stack = Stack::new(false);
    let r = stack.get("/about/health");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("bridge"));
    let r = stack.focus("POST", PATH, &create("c"));
    assert_eq!((r.status, r.reason().as_str()), (503, "UNSPECIFIED"));
    assert_eq!(stack.stats()["healthy"], false);
}
