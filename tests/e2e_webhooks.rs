//! End-to-end tests of the reload webhook (`POST /_berth/webhook/reload?app=`): a request
//! signed with the app's secret (GitHub's `X-Hub-Signature-256`) reloads the app from a local
//! git repository and, with `--promote`, prod serves the new commit; a wrong, missing or
//! malformed signature, an unknown app and an app without a secret get 401 and nothing
//! reloads; `--rotate` makes the old secret fail; the route is not shadowed by an app at `/`;
//! an unknown sync gets 401; a body over 1 MiB gets 413.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const BUILD_WAIT: Duration = Duration::from_secs(300);

/// A git repository holding the `container` fixture, with one commit per marker.
struct Repo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new(marker: &str) -> Repo {
        let tmp = tempfile::Builder::new().prefix("berth-e2e-hook-").tempdir().unwrap();
        let root = tmp.path().join("repo");
        copy_dir(&fixture_app("container"), &root);
        git(&root, &["init", "-q", "-b", "main"]);
        let r = Repo { _tmp: tmp, root };
        r.commit(marker);
        r
    }

    fn commit(&self, marker: &str) -> String {
        set_container_marker(&self.root, marker);
        git(&self.root, &["add", "-A"]);
        git(&self.root, &["commit", "-qm", marker]);
        git(&self.root, &["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The secret printed by `app webhook-secret` (the line after the heading).
fn secret_from(out: &CmdOut) -> String {
    let mut lines = out.stdout.lines();
    lines.find(|l| l.starts_with("Webhook secret for"));
    let secret = lines.next().unwrap_or_default().trim().to_string();
    assert!(secret.len() >= 32, "webhook-secret should print a long secret: {out}");
    secret
}

/// POSTs `body` to `/_berth/webhook/<what>?<query>` on `host`, with the signature header if
/// given; returns the status and body.
async fn post(
    b: &Berth,
    client: &reqwest::Client,
    host: &str,
    what_and_query: &str,
    body: Vec<u8>,
    signature: Option<&str>,
) -> (u16, String) {
    let url = b.http_url(host, &format!("/_berth/webhook/{what_and_query}"));
    let mut req = client.post(&url).header("content-type", "application/json").header("x-github-event", "push");
    if let Some(s) = signature {
        req = req.header("x-hub-signature-256", s);
    }
    let resp = req.body(body).send().await.unwrap_or_else(|e| b.fail(format!("POST {url}: {e}")));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_reloads_and_bad_ones_change_nothing() {
    let t0 = Instant::now();
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300");
    let n = nonce();
    let m = |s: &str| format!("berth-e2e-hook-{s}-{n}");
    let repo = Repo::new(&m("one"));
    // The app is at `/`: the webhook route must not be shadowed by it.
    let (host, app) = ("hook.localhost", "hook.localhost:/");
    b.cli_ok(&["app", "create", "--spec", "container", &repo.url(), app]);
    cleanup.add(b.app_image(app));
    let client = slow_client(&[host], BUILD_WAIT);
    let g = get_until_marker(&client, &b.http_url(host, "/"), &m("one"), BUILD_WAIT).await;
    b.ensure(matches!(&g, Ok(g) if g.status == 200), format!("the app should serve its first commit: {g:?}"));

    // No secret yet: 401, like any unknown target.
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let (status, text) = post(&b, &client, host, "reload?app=hook.localhost:/", body.clone(), Some("sha256=00")).await;
    b.ensure(status == 401, format!("an app without a secret must get 401: {status} {text}"));

    let out = b.cli_ok(&["app", "webhook-secret", "--promote", app]);
    let secret = secret_from(&out);
    b.ensure(
        out.stdout.contains(&format!("http://hook.localhost:{}/_berth/webhook/reload?app=", b.http_port)),
        format!("webhook-secret should print the webhook URL: {out}"),
    );
    // A second create without --rotate is refused and keeps the secret.
    let again = b.cli(&["app", "webhook-secret", app]);
    b.ensure(
        again.code == 1 && is_single_error_line(&again.stderr) && again.stderr.contains("--rotate"),
        format!("webhook-secret on an app with a secret should fail pointing at --rotate: {again}"),
    );

    let versions_before = b.version_list(app).len();
    let c2 = repo.commit(&m("two"));
    let query = "reload?app=hook.localhost:/";
    let good = sign(&secret, &body);
    let wrong = sign("not the secret", &body);
    for (what, q, sig) in [
        ("missing signature", query, None),
        ("wrong signature", query, Some(wrong.as_str())),
        ("malformed signature", query, Some("sha256=xyz")),
        ("signature without its sha256= prefix", query, Some(good.trim_start_matches("sha256="))),
        ("unknown app", "reload?app=nosuch.localhost:/", Some(good.as_str())),
    ] {
        let (status, text) = post(&b, &client, host, q, body.clone(), sig).await;
        b.ensure(status == 401, format!("{what}: expected 401, got {status} {text}"));
        b.ensure(!text.contains(&secret), format!("{what}: the answer leaks the secret: {text}"));
    }
    // The HTTPS listener has the route too.
    let https = b.https_url(host, &format!("/_berth/webhook/{query}"));
    let resp = client.post(&https).header("x-hub-signature-256", &wrong).body(body.clone()).send().await;
    let status = resp.map(|r| r.status().as_u16());
    b.ensure(matches!(status, Ok(401)), format!("HTTPS webhook with a wrong signature: {status:?}"));
    // A correct signature of another body is wrong for this one.
    let (status, _) = post(&b, &client, host, query, b"{}".to_vec(), Some(&good)).await;
    b.ensure(status == 401, format!("a signature of another body must get 401, got {status}"));

    // Over 1 MiB: 413, nothing runs.
    let big = vec![b' '; 1024 * 1024 + 1];
    let (status, text) = post(&b, &client, host, query, big.clone(), Some(&sign(&secret, &big))).await;
    b.ensure(status == 413, format!("a body over 1 MiB must get 413, got {status} {text}"));
    // An unknown sync: the same 401 (syncs' webhooks are tested in e2e_apply).
    let (status, text) = post(&b, &client, host, "sync?id=x", body.clone(), Some(&good)).await;
    b.ensure(status == 401, format!("unknown sync: {status} {text}"));
    // GitHub's ping when the webhook is set up: 200, nothing reloads (counted below).
    let url = b.http_url(host, &format!("/_berth/webhook/{query}"));
    let ping = client.post(&url).header("x-github-event", "ping").header("x-hub-signature-256", &good);
    let status = ping.body(body.clone()).send().await.map(|r| r.status().as_u16());
    b.ensure(matches!(status, Ok(200)), format!("a signed ping should answer 200: {status:?}"));

    // The good one: 202 at once, then prod (promote) serves the new commit.
    let (status, text) = post(&b, &client, host, query, body.clone(), Some(&good)).await;
    b.ensure(
        status == 202 && text.contains("\"promote\":true"),
        format!("a signed webhook should answer 202 with its status: {status} {text}"),
    );
    let g = get_until_marker(&client, &b.http_url(host, "/"), &m("two"), BUILD_WAIT).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m("two"))),
        format!("after the webhook prod should serve the new commit: {g:?}"),
    );
    cleanup.add(b.app_image(app));
    b.ensure(json_str(&b.app(app)["git_commit"]) == c2, format!("git_commit should be {c2}: {}", b.app(app)));
    // Exactly one new version: the refused requests reloaded nothing.
    let versions = b.version_list(app);
    b.ensure(
        versions.len() == versions_before + 1,
        format!("one signed webhook must add exactly one version ({versions_before} before): {versions:?}"),
    );

    // Rotate: the old secret fails, the new one works.
    let rotated = secret_from(&b.cli_ok(&["app", "webhook-secret", "--rotate", app]));
    b.ensure(rotated != secret, "--rotate must give a new secret");
    let (status, _) = post(&b, &client, host, query, body.clone(), Some(&good)).await;
    b.ensure(status == 401, format!("the old secret must fail after --rotate, got {status}"));
    let (status, text) = post(&b, &client, host, query, body.clone(), Some(&sign(&rotated, &body))).await;
    b.ensure(
        status == 202 && text.contains("\"promote\":false"),
        format!("the rotated secret (without --promote) should be accepted: {status} {text}"),
    );
    eprintln!("TIMING signed_webhook_reloads_and_bad_ones_change_nothing {:.1}s", t0.elapsed().as_secs_f64());
}
