//! End-to-end tests of CLI error handling: bad input is rejected with one
//! `error: ...` line and exit code 1, and nothing is created.

mod common;

use common::*;
use serde_json::Value;

/// One bad `berth app create` invocation and an optional text its error must
/// contain: the exact texts from the contract, otherwise the offending input.
struct Case {
    what: &'static str,
    args: Vec<&'static str>,
    must_contain: Option<&'static str>,
}

fn case(what: &'static str, args: &[&'static str], must_contain: Option<&'static str>) -> Case {
    let mut a = vec!["app", "create"];
    a.extend_from_slice(args);
    Case { what, args: a, must_contain }
}

/// Test 7: every bad input gives exit 1, a single `error:` line, and leaves
/// `app list --format json` unchanged.
#[test]
fn bad_input_is_rejected_and_creates_nothing() {
    let b = Berth::start();
    // Baseline apps: the conflict cases need `/` on conflict.localhost.
    b.create_image_app("nginx", 80, "conflict.localhost:/", &[]);
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/existing"]);
    let before: Vec<Value> = b.app_list();
    b.ensure(before.len() == 2, format!("expected 2 baseline apps, got {before:?}"));

    let img = ["--spec", "image", "--approve", "--param", "image=nginx", "--param", "port=80", "-"];
    let with_img = |path: &'static str| -> Vec<&'static str> {
        let mut v = img.to_vec();
        v.push(path);
        v
    };
    let cases = vec![
        case("unknown spec", &["--spec", "nosuchspec", "--approve", "-", "bad1.localhost:/"], Some("nosuchspec")),
        case(
            "missing required param port",
            &["--spec", "image", "--approve", "--param", "image=nginx", "-", "bad2.localhost:/"],
            Some("param port is a required param, a value has to be provided"),
        ),
        case(
            "missing required param image",
            &["--spec", "image", "--approve", "--param", "port=80", "-", "bad3.localhost:/"],
            Some("required param"),
        ),
        case(
            "missing required param url (proxy)",
            &["--spec", "proxy", "-", "bad4.localhost:/"],
            Some("required param"),
        ),
        case(
            "malformed --param without =",
            &[
                "--spec",
                "image",
                "--approve",
                "--param",
                "foo",
                "--param",
                "image=nginx",
                "--param",
                "port=80",
                "-",
                "bad5.localhost:/",
            ],
            Some("foo"),
        ),
        case("app path without leading /", &with_img("nopath"), Some("nopath")),
        case("app path with two colons", &with_img("a:b:/x"), Some("a:b:/x")),
        case("app path with ..", &with_img("/x/../y"), Some("/x/../y")),
        case("app path with .. and domain", &with_img("bad6.localhost:/x/../y"), None),
        case("path below an existing / in the same domain", &with_img("conflict.localhost:/x"), None),
        case("same path twice", &with_img("conflict.localhost:/"), Some("App already exists at")),
        case(
            "same path twice, default domain",
            &["--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/existing"],
            Some("App already exists at"),
        ),
        case(
            "image that does not exist",
            &[
                "--spec",
                "image",
                "--approve",
                "--param",
                "image=berth-no-such-image:1",
                "--param",
                "port=80",
                "-",
                "bad7.localhost:/",
            ],
            Some("berth-no-such-image"),
        ),
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let out = b.cli(&c.args);
        let mut problems = Vec::new();
        if out.code != 1 {
            problems.push(format!("exit code {} (expected 1)", out.code));
        }
        if !is_single_error_line(&out.stderr) {
            problems.push("stderr is not a single line starting with `error: `".to_string());
        }
        if let Some(text) = c.must_contain {
            if !out.stderr.contains(text) {
                problems.push(format!("stderr does not contain {text:?}"));
            }
        }
        let after = b.app_list();
        if after != before {
            problems.push(format!("app list changed: {}", serde_json::to_string(&after).unwrap_or_default()));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "[{}] `berth {}`: {}\n    stdout: {:?}\n    stderr: {:?}",
                c.what,
                c.args.join(" "),
                problems.join("; "),
                out.stdout,
                out.stderr
            ));
        }
    }

    // Nothing was started either (no app got a request).
    if let Some(inst) = b.instance_id() {
        let out = docker(&["ps", "-aq", "--filter", &format!("label=berth.instance={inst}")]);
        if !out.stdout.trim().is_empty() {
            failures.push(format!("containers exist although no app was requested: {}", out.stdout));
        }
    }

    b.ensure(
        failures.is_empty(),
        format!(
            "{} of {} bad inputs were not handled as specified:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        ),
    );
}

/// `--dry-run` validates but does not create the app.
#[test]
fn dry_run_creates_nothing() {
    let b = Berth::start();
    let before = b.app_list();
    let out = b.cli(&[
        "app",
        "create",
        "--dry-run",
        "--spec",
        "image",
        "--approve",
        "--param",
        "image=nginx",
        "--param",
        "port=80",
        "-",
        "dry.localhost:/",
    ]);
    b.ensure(out.ok(), format!("`app create --dry-run` with valid input should exit 0: {out}"));
    let after = b.app_list();
    b.ensure(after == before, format!("`--dry-run` created something: {after:?}"));
    // A dry run of bad input still fails.
    let out = b.cli(&[
        "app",
        "create",
        "--dry-run",
        "--spec",
        "image",
        "--approve",
        "--param",
        "image=nginx",
        "-",
        "dry.localhost:/",
    ]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr),
        format!("`app create --dry-run` without port should fail with one error line: {out}"),
    );
    // And the real create still works afterwards.
    b.create_image_app("nginx", 80, "dry.localhost:/", &[]);
}

/// Test 7b: with no server running, every CLI command fails with one
/// `error:` line that mentions the server, and exit code 1.
#[test]
fn cli_without_server_fails_cleanly() {
    let b = Berth::configure("");
    let commands: Vec<Vec<&str>> = vec![
        vec!["app", "list"],
        vec!["app", "list", "--format", "json"],
        vec![
            "app",
            "create",
            "--spec",
            "image",
            "--approve",
            "--param",
            "image=nginx",
            "--param",
            "port=80",
            "-",
            "x.localhost:/",
        ],
        vec!["app", "delete", "x.localhost:/"],
        vec!["app", "logs", "x.localhost:/"],
        vec!["server", "stop"],
    ];
    let mut failures = Vec::new();
    for args in &commands {
        let out = b.cli(args);
        // The contract requires `app list` to mention the server; the other
        // commands only need the single error line and exit 1.
        let must_mention = args[..2] == ["app", "list"];
        let ok = out.code == 1
            && is_single_error_line(&out.stderr)
            && (!must_mention || out.stderr.to_lowercase().contains("server"));
        if !ok {
            failures.push(format!(
                "`berth {}`: expected exit 1 and one `error: ...` line{}; got {out}",
                args.join(" "),
                if must_mention { " mentioning the server" } else { "" }
            ));
        }
    }
    assert!(failures.is_empty(), "with no server running in {}:\n{}", b.home_path.display(), failures.join("\n"));
    assert!(!b.home_path.join("run/berth.sock").exists(), "a CLI command must not create the admin socket");
}

/// Issue 7 item 5: a file given as a source says it is a file (not that it does not exist),
/// and nothing is created.
#[test]
fn a_file_as_source_says_so() {
    let b = Berth::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.py");
    std::fs::write(&file, "print('hi')\n").unwrap();
    let out = b.cli(&["app", "create", "--spec", "python-wsgi", file.to_str().unwrap(), "/fileapp"]);
    b.ensure(
        out.code == 1
            && is_single_error_line(&out.stderr)
            && out.stderr.contains(&format!("{} is a file, not a folder", file.display())),
        format!("a file as source: {out}"),
    );
    b.ensure(b.app_list().is_empty(), "a file as source created an app");
    b.ensure(b.source_entries().is_empty(), format!("left under sources/: {:?}", b.source_entries()));
}
