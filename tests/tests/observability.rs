//! The observability kit's static checks: `promtool` accepts the alert rules, their
//! unit tests and the example scrape config, and the dashboard is valid JSON whose
//! panels all query something. (That every queried metric exists on a live
//! `/metrics` is checked against real processes in `control/tests/appliance.rs`.)

use std::process::Command;

use viaduct_tests::{assert_ok, have_tool, run};

fn kit() -> std::path::PathBuf {
    viaduct_tests::repo().join("deploy/observability")
}

#[test]
fn promtool_accepts_rules_rule_tests_and_scrape_config() {
    if !have_tool("promtool", "VIADUCT_REQUIRE_PROMTOOL") {
        return;
    }
    let out = run(Command::new("promtool")
        .args(["check", "rules", "viaduct-alerts.yml"])
        .current_dir(kit()));
    assert_ok("promtool check rules", &out);
    let out = run(Command::new("promtool")
        .args(["test", "rules", "viaduct-alerts.test.yml"])
        .current_dir(kit()));
    assert_ok("promtool test rules", &out);
    let out = run(Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(kit()));
    assert_ok("promtool check config", &out);
}

#[test]
fn dashboard_is_json_and_every_panel_queries() {
    let text = std::fs::read_to_string(kit().join("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert_eq!(dash["uid"], "viaduct-bridge");
    let panels = dash["panels"].as_array().expect("panels");
    let mut queried = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("viaduct_"), "{expr}");
            queried += 1;
        }
    }
    assert!(queried >= 30, "only {queried} queries");
}
