//! End-to-end tests of the audit log: admin changes are recorded with their command, app,
//! local user and result (a failed change as an error with its message); `berth audit list`
//! filters by app glob and by time; events older than `[audit] retention_days` are pruned
//! at start.

mod common;

use common::*;
use serde_json::Value;

const PROXY: &[&str] = &["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-"];

fn audit(b: &Berth, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "list", "--format", "json"];
    args.extend_from_slice(extra);
    let out = b.cli_ok(&args);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| b.fail(format!("audit list is not JSON ({e}): {out}")))
}

fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events.iter().map(|e| (json_str(&e["command"]), json_str(&e["app"]), json_str(&e["result"]))).collect()
}

/// The current user's name as `id -un` gives it.
fn me() -> String {
    let out = std::process::Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn owned(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
}

#[test]
fn changes_are_recorded_with_user_and_result_and_filtered() {
    let b = Berth::start();
    let mut create = PROXY.to_vec();
    create.push("/audited");
    b.cli_ok(&create);
    b.cli_ok(&["param", "update", "--promote", "url", "http://127.0.0.1:10", "/audited"]);
    let mut other = PROXY.to_vec();
    other.push("/other");
    b.cli_ok(&other);
    // A create on a taken path fails: recorded as an error with the server's message.
    let failed = b.cli(&create);
    b.ensure(!failed.ok(), format!("a second create on /audited succeeded: {failed}"));
    b.cli_ok(&["app", "list"]); // a read: not recorded
    b.cli_ok(&["app", "delete", "--dry-run", "/other"]);
    b.cli_ok(&["app", "delete", "/audited"]);

    let events = audit(&b, &[]);
    assert_eq!(
        summary(&events),
        owned(&[
            ("app create", "/audited", "ok"),
            ("param update", "/audited", "ok"),
            ("app create", "/other", "ok"),
            ("app create", "/audited", "error"),
            ("app delete (dry run)", "/other", "ok"),
            ("app delete", "/audited", "ok"),
        ]),
        "{events:?}\n{}",
        b.diag()
    );
    let user = me();
    assert!(events.iter().all(|e| json_str(&e["user"]) == user), "not all by {user}: {events:?}");
    let message = json_str(&events[3]["message"]);
    assert!(!message.is_empty() && failed.stderr.contains(&message), "{message:?} vs {failed}");
    assert!(events.iter().filter(|e| json_str(&e["result"]) == "ok").all(|e| json_str(&e["message"]).is_empty()));
    let now = unix_now().as_secs() as i64;
    assert!(events.iter().all(|e| (now - e["at"].as_i64().unwrap()).abs() < 120), "{events:?}");

    // --app filters by glob.
    let only_other = audit(&b, &["--app", "/oth*"]);
    assert_eq!(
        summary(&only_other),
        owned(&[("app create", "/other", "ok"), ("app delete (dry run)", "/other", "ok")])
    );
    // --since: a duration, or an RFC 3339 time.
    assert_eq!(audit(&b, &["--since", "1h"]).len(), 6);
    assert_eq!(audit(&b, &["--since", "2999-01-01T00:00:00Z"]).len(), 0);
    let bad = b.cli(&["audit", "list", "--since", "yesterday"]);
    b.ensure(!bad.ok() && is_single_error_line(&bad.stderr), format!("bad --since accepted: {bad}"));
    // The table names the user and the error.
    let table = b.cli_ok(&["audit", "list"]).stdout;
    assert!(table.contains(&user) && table.contains("error") && table.contains("app delete"), "{table}");
}

#[test]
fn events_older_than_the_retention_are_pruned_at_start() {
    let mut b = Berth::configure("\n[audit]\nretention_days = 1\n");
    b.start_server();
    let mut create = PROXY.to_vec();
    create.push("/kept");
    b.cli_ok(&create);
    b.stop_server();
    // Two events written while the server is down: one 2 days old, one 1 hour old.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = berth::store::Store::open(&b.home_path.join("metadata").join("berth.db")).await.unwrap();
        let now = unix_now().as_secs() as i64;
        for (age, app) in [(2 * 86_400, "/ancient"), (3600, "/recent")] {
            let event = berth::store::audit::AuditEvent {
                at: now - age,
                user: "someone".into(),
                command: "app create".into(),
                app: app.into(),
                result: berth::store::audit::AuditResult::Ok,
                message: String::new(),
            };
            store.insert_audit(&event).await.unwrap();
        }
        store.close().await;
    });
    b.start_server();
    let events = audit(&b, &[]);
    let apps: Vec<String> = events.iter().map(|e| json_str(&e["app"])).collect();
    // The pruner runs at start, in the background: wait for it.
    let pruned = wait_until(std::time::Duration::from_secs(10), std::time::Duration::from_millis(100), || {
        audit(&b, &[]).iter().all(|e| json_str(&e["app"]) != "/ancient")
    });
    b.ensure(pruned.is_some(), format!("the 2-day-old event was kept with retention_days = 1: {apps:?}"));
    // Oldest first: the hour-old event, then this run's create and the stop that ended it.
    let kept: Vec<(String, String)> =
        audit(&b, &[]).iter().map(|e| (json_str(&e["command"]), json_str(&e["app"]))).collect();
    let expected = [("app create", "/recent"), ("app create", "/kept"), ("server stop", "")];
    assert_eq!(kept, expected.map(|(c, a)| (c.to_string(), a.to_string())), "{}", b.diag());
}
