//! Shared harness for the berth end-to-end tests.
//!
//! Every test gets its own `BERTH_HOME` (a temp dir), its own HTTP/HTTPS ports
//! and its own server process. Containers started by that server are removed on
//! drop (by the `berth.instance=<id>` label). All traffic goes to 127.0.0.1.
#![allow(dead_code)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Path of the binary under test.
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Tag of the WebSocket echo fixture image (tests/fixtures/wsecho).
pub const WSECHO_IMAGE: &str = "berth-test-wsecho:1";

/// How long `berth server start` may take to answer `berth app list`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A free TCP port on 127.0.0.1 (bound, read, dropped).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local_addr").port()
}

/// Seconds since the epoch, as the `docker events --since/--until` format.
pub fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

fn docker_ts(d: Duration) -> String {
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Result of running a command.
#[derive(Debug, Clone)]
pub struct CmdOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

impl fmt::Display for CmdOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

fn run(cmd: &mut Command) -> CmdOut {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    CmdOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the docker CLI.
pub fn docker(args: &[&str]) -> CmdOut {
    run(Command::new("docker").args(args))
}

/// `docker inspect -f '{{.State.Running}}' ID` (false if the container is gone).
pub fn container_running(id: &str) -> bool {
    let out = docker(&["inspect", "-f", "{{.State.Running}} {{.State.Paused}}", id]);
    out.ok() && out.stdout.trim() == "true false"
}

/// Whether the container exists and is paused (the engine's freeze).
pub fn container_paused(id: &str) -> bool {
    let out = docker(&["inspect", "-f", "{{.State.Paused}}", id]);
    out.ok() && out.stdout.trim() == "true"
}

/// Whether a container with that id exists at all.
pub fn container_exists(id: &str) -> bool {
    docker(&["inspect", "-f", "{{.Id}}", id]).ok()
}

/// Polls `f` every `every` until it returns true or `timeout` passes.
/// Returns the elapsed time when it became true.
pub fn wait_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Async variant of [`wait_until`] (does not block the runtime between polls).
pub async fn wait_until_async(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// `true` if stderr is exactly one line starting with `error: `.
pub fn is_single_error_line(stderr: &str) -> bool {
    let t = stderr.trim_end();
    t.lines().count() == 1 && t.starts_with("error: ")
}

/// Renders a JSON id (string or number) as a string.
pub fn json_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Splits `[domain:]/path` into (domain, path).
pub fn split_app_path(app_path: &str) -> (Option<&str>, &str) {
    match app_path.split_once(':') {
        Some((d, p)) => (Some(d), p),
        None => (None, app_path),
    }
}

/// Whether an `app list --format json` entry is the app at `app_path`.
pub fn entry_matches(entry: &Value, app_path: &str) -> bool {
    if entry["app_path"].as_str() == Some(app_path) {
        return true;
    }
    let (dom, path) = split_app_path(app_path);
    if entry["path"].as_str() != Some(path) {
        return false;
    }
    let edom = entry["domain"].as_str().unwrap_or("");
    match dom {
        Some(d) => edom == d,
        None => edom.is_empty() || edom == "localhost",
    }
}

/// A berth server with its own home directory and ports.
pub struct Berth {
    home: Option<tempfile::TempDir>,
    pub home_path: PathBuf,
    pub http_port: u16,
    pub https_port: u16,
    child: Option<Child>,
    instance_id: Option<String>,
}

impl Berth {
    /// Creates a home with a berth.toml and starts the server.
    pub fn start() -> Berth {
        Self::start_with("")
    }

    /// Like [`Berth::start`], with extra lines appended to the `[container]` table.
    pub fn start_with(container_extra: &str) -> Berth {
        let mut b = Self::configure(container_extra);
        b.start_server();
        b
    }

    /// Creates a home with a berth.toml but does not start the server.
    pub fn configure(container_extra: &str) -> Berth {
        let home = tempfile::Builder::new().prefix("berth-e2e-").tempdir().expect("create temp BERTH_HOME");
        let home_path = home.path().to_path_buf();
        let http_port = free_port();
        let mut https_port = free_port();
        while https_port == http_port {
            https_port = free_port();
        }
        let toml = format!(
            "default_domain = \"localhost\"\n\
             \n[http]\nhost = \"127.0.0.1\"\nport = {http_port}\n\
             \n[https]\nhost = \"127.0.0.1\"\nport = {https_port}\n\
             \n[container]\nstop_timeout_secs = 2\n{container_extra}\n"
        );
        fs::write(home_path.join("berth.toml"), toml).expect("write berth.toml");
        Berth { home: Some(home), home_path, http_port, https_port, child: None, instance_id: None }
    }

    pub fn log_path(&self) -> PathBuf {
        self.home_path.join("server.log")
    }

    /// Spawns `berth server start` and waits until `berth app list` succeeds.
    pub fn start_server(&mut self) {
        self.start_server_with_env(&[]);
    }

    /// The instance id the server wrote to `$BERTH_HOME/instance_id`.
    pub fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits for the server process to exit (after a stop request).
    pub fn wait_server_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("no server running");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within {timeout:?}\n{}", self.diag());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `berth server stop`; asserts exit 0 and returns the server's exit status.
    pub fn stop_server(&mut self) -> ExitStatus {
        let out = self.cli(&["server", "stop"]);
        self.ensure(out.ok(), format!("`berth server stop` failed: {out}"));
        self.wait_server_exit(Duration::from_secs(20))
    }

    /// Sends SIGTERM to the server and returns its exit status.
    pub fn sigterm_server(&mut self) -> ExitStatus {
        let pid = self.server_pid().expect("no server running");
        // SAFETY: plain kill(2) on our own child process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        self.wait_server_exit(Duration::from_secs(20))
    }

    /// Runs the berth CLI against this home.
    pub fn cli(&self, args: &[&str]) -> CmdOut {
        run(Command::new(BERTH)
            .args(args)
            .env("BERTH_HOME", &self.home_path)
            .env_remove("RUST_LOG")
            .env_remove("BERTH_LOG"))
    }

    /// Runs the CLI and asserts exit 0.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> CmdOut {
        let out = self.cli(args);
        self.ensure(out.ok(), format!("`berth {}` failed: {out}", args.join(" ")));
        out
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Diagnostic text for assertion messages: home path + tail of the server log.
    pub fn diag(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(150)..].join("\n");
        format!(
            "==== BERTH_HOME {} (http {}, https {}, instance {:?}) server log (last {} lines) ====\n{}\n==== end of server log ====",
            self.home_path.display(),
            self.http_port,
            self.https_port,
            self.instance_id,
            lines.len().min(150),
            tail
        )
    }

    /// Panics with `msg` and the server log if `cond` is false.
    #[track_caller]
    pub fn ensure(&self, cond: bool, msg: impl AsRef<str>) {
        if !cond {
            panic!("{}\n{}", msg.as_ref(), self.diag());
        }
    }

    /// Panics with `msg` and the server log.
    #[track_caller]
    pub fn fail(&self, msg: impl AsRef<str>) -> ! {
        panic!("{}\n{}", msg.as_ref(), self.diag());
    }

    /// `berth app list --format json`, raw stdout (asserts exit 0).
    #[track_caller]
    pub fn app_list_raw(&self) -> String {
        self.cli_ok(&["app", "list", "--format", "json"]).stdout
    }

    /// `berth app list --format json`, parsed; asserts it is an array.
    #[track_caller]
    pub fn app_list(&self) -> Vec<Value> {
        let raw = self.app_list_raw();
        match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Array(a)) => a,
            other => self.fail(format!("app list --format json is not a JSON array: {other:?}\nraw: {raw}")),
        }
    }

    /// The list entry of the app at `app_path`, if any.
    pub fn find_app(&self, app_path: &str) -> Option<Value> {
        self.app_list().into_iter().find(|e| entry_matches(e, app_path))
    }

    /// The list entry of the app at `app_path` (panics if missing).
    #[track_caller]
    pub fn app(&self, app_path: &str) -> Value {
        match self.find_app(app_path) {
            Some(v) => v,
            None => self.fail(format!("app {app_path} not in `app list --format json`: {}", self.app_list_raw())),
        }
    }

    /// The id of the app at `app_path`.
    #[track_caller]
    pub fn app_id(&self, app_path: &str) -> String {
        let id = json_str(&self.app(app_path)["id"]);
        self.ensure(!id.is_empty(), format!("app {app_path} has no id"));
        id
    }

    /// The `state` of the app at `app_path`.
    #[track_caller]
    pub fn app_state(&self, app_path: &str) -> String {
        json_str(&self.app(app_path)["state"])
    }

    /// Creates an image app (with `--approve`) and returns its id.
    #[track_caller]
    pub fn create_image_app(&self, image: &str, port: u16, app_path: &str, extra: &[&str]) -> String {
        let image_param = format!("image={image}");
        let port_param = format!("port={port}");
        let mut args =
            vec!["app", "create", "--spec", "image", "--approve", "--param", &image_param, "--param", &port_param];
        args.extend_from_slice(extra);
        args.push("-");
        args.push(app_path);
        self.cli_ok(&args);
        self.app_id(app_path)
    }

    /// Label filters that select this server's containers for one app.
    fn app_filters(&self, app_id: &str) -> Vec<String> {
        let mut f = vec!["--filter".to_string(), format!("label=berth.app.id={app_id}")];
        if let Some(inst) = &self.instance_id {
            f.push("--filter".into());
            f.push(format!("label=berth.instance={inst}"));
        }
        f
    }

    /// Containers (id, state) of an app, from `docker ps -a`.
    pub fn containers(&self, app_id: &str) -> Vec<(String, String)> {
        docker_ps(&self.app_filters(app_id))
    }

    /// The single container of an app (asserts there is exactly one).
    #[track_caller]
    pub fn single_container(&self, app_id: &str) -> String {
        let cs = self.containers(app_id);
        self.ensure(cs.len() == 1, format!("expected exactly one container for app {app_id}, found {cs:?}"));
        cs[0].0.clone()
    }

    /// Number of `start` events of an app's containers since `since` (unix time).
    pub fn start_events(&self, app_id: &str, since: Duration) -> usize {
        let until = unix_now() + Duration::from_millis(500);
        let (s, u) = (docker_ts(since), docker_ts(until));
        let filters = self.app_filters(app_id);
        let mut args: Vec<&str> = vec!["events", "--since", &s, "--until", &u];
        args.extend(filters.iter().map(String::as_str));
        args.extend(["--filter", "event=start", "--format", "{{.ID}}"]);
        let out = docker(&args);
        assert!(out.ok(), "docker events failed: {out}");
        out.stdout.lines().filter(|l| !l.trim().is_empty()).count()
    }

    pub fn http_url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.http_port)
    }

    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https_port)
    }

    /// A reqwest client that maps `hosts` (and localhost) to 127.0.0.1, accepts
    /// the self-signed certificate, ignores proxies and does not follow redirects.
    pub fn client(&self, hosts: &[&str]) -> reqwest::Client {
        client_for(hosts)
    }
}

/// `docker ps -a` with the given `--filter` arguments: (id, state) of each container.
fn docker_ps(filters: &[String]) -> Vec<(String, String)> {
    let mut args: Vec<&str> = vec!["ps", "-a", "--no-trunc"];
    args.extend(filters.iter().map(String::as_str));
    args.extend(["--format", "{{.ID}} {{.State}}"]);
    let out = docker(&args);
    assert!(out.ok(), "docker ps failed: {out}");
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (id, st) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            (id.to_string(), st.to_string())
        })
        .collect()
}

/// See [`Berth::client`].
pub fn client_for(hosts: &[&str]) -> reqwest::Client {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .resolve("localhost", lo);
    for h in hosts {
        b = b.resolve(h, lo);
    }
    b.build().expect("build reqwest client")
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let inst = self.instance_id.clone().or_else(|| {
            fs::read_to_string(self.home_path.join("instance_id"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        });
        match inst {
            Some(inst) => {
                let out = docker(&["ps", "-aq", "--filter", &format!("label=berth.instance={inst}")]);
                let ids: Vec<&str> = out.stdout.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids);
                    let _ = docker(&args);
                }
            }
            None => eprintln!(
                "warning: no instance_id in {}; containers of this test were not cleaned up",
                self.home_path.display()
            ),
        }
        if std::thread::panicking() || std::env::var_os("BERTH_TEST_KEEP").is_some() {
            if let Some(home) = self.home.take() {
                let p = home.keep();
                eprintln!("kept BERTH_HOME {}", p.display());
            }
        }
    }
}

/// Builds the WebSocket echo fixture image once (per process, and serialised
/// across processes with a file lock). Returns the image tag.
pub fn ensure_wsecho_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let lock_path = std::env::temp_dir().join("berth-test-wsecho-build.lock");
        let lock = File::create(&lock_path).expect("create build lock file");
        lock.lock().expect("lock build lock file");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wsecho");
        let out = run(Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .arg("build")
            .arg("-q")
            .arg("-f")
            .arg(dir.join("Containerfile"))
            .arg("-t")
            .arg(WSECHO_IMAGE)
            .arg(&dir));
        let _ = lock.unlock();
        assert!(out.ok(), "building {WSECHO_IMAGE} failed: {out}");
    });
    WSECHO_IMAGE
}

/// Reads a streaming response body until `pred` holds for what was read so far.
pub async fn read_until(
    resp: &mut reqwest::Response,
    buf: &mut Vec<u8>,
    timeout: Duration,
    pred: impl Fn(&[u8]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !pred(buf) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => buf.extend_from_slice(&c),
            _ => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------
// HTTP/2 over TLS (reqwest is built without its http2 feature, so use hyper).
// ---------------------------------------------------------------------------

mod noverify {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Accepts any server certificate (berth uses a self-signed one).
    #[derive(Debug)]
    pub struct NoVerify(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Result of [`h2_get`].
#[derive(Debug)]
pub struct H2Result {
    /// ALPN protocol the server selected (`None` if it selected none).
    pub alpn: Option<String>,
    pub version: hyper::Version,
    pub status: u16,
    pub body: String,
}

/// GET `https://{host}:{port}{path}` over TLS to 127.0.0.1, offering ALPN
/// `h2` and `http/1.1`. If the server picks `h2` the request is sent as HTTP/2.
pub async fn h2_get(port: u16, host: &str, path: &str) -> Result<H2Result, String> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(noverify::NoVerify(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    let uri = format!("https://{host}:{port}{path}");
    let io = TokioIo::new(tls);
    let resp = if alpn.as_deref() == Some("h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(uri).body(Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| format!("h2 request: {e}"))?
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", format!("{host}:{port}"))
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| format!("h1 request: {e}"))?
    };
    let version = resp.version();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok(H2Result { alpn, version, status, body: String::from_utf8_lossy(&body).into_owned() })
}

// ---------------------------------------------------------------------------
// Additions for the build / spec / git end-to-end tests (e2e_build, e2e_specs,
// e2e_git).
// ---------------------------------------------------------------------------

impl Berth {
    /// Like [`Berth::start_with`], with extra environment variables for the server process
    /// (e.g. `GIT_CONFIG_GLOBAL` so its `git` uses an `insteadOf` rewrite).
    pub fn start_with_env(container_extra: &str, env: &[(&str, &str)]) -> Berth {
        let mut b = Self::configure(container_extra);
        b.start_server_with_env(env);
        b
    }

    /// Like [`Berth::start_server`], with extra environment variables for the server process.
    pub fn start_server_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open server.log");
        let log2 = log.try_clone().expect("clone log fd");
        let mut cmd = Command::new(BERTH);
        cmd.args(["server", "start"])
            .env("BERTH_HOME", &self.home_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        if let Ok(filter) = std::env::var("BERTH_TEST_LOG") {
            cmd.env("BERTH_LOG", &filter).env("RUST_LOG", &filter);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn berth server start"));
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                panic!("berth server start exited early with {status}\n{}", self.diag());
            }
            let out = self.cli(&["app", "list"]);
            if out.ok() {
                break;
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!("server not ready after {READY_TIMEOUT:?}: last `berth app list`: {out}\n{}", self.diag());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.instance_id = fs::read_to_string(self.home_path.join("instance_id"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
    }

    /// `berth app logs --build APP_PATH` (not asserted).
    pub fn build_log(&self, app_path: &str) -> CmdOut {
        self.cli(&["app", "logs", "--build", app_path])
    }

    /// The `image` of the app at `app_path` from `app list --format json`.
    #[track_caller]
    pub fn app_image(&self, app_path: &str) -> String {
        json_str(&self.app(app_path)["image"])
    }

    /// Entries (recursively: files and folders) under `$BERTH_HOME/sources`.
    pub fn source_entries(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = fs::read_dir(dir) {
                for e in rd.flatten() {
                    out.push(e.path());
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(&e.path(), out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.home_path.join("sources"), &mut out);
        out
    }

    /// How many times the server log says a build of `image` started.
    pub fn builds_logged(&self, image: &str) -> usize {
        let needle = format!("building {image} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }
}

/// The sample app folder of a built-in spec (`tests/fixtures/apps/<spec>`).
pub fn fixture_app(spec: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps").join(spec)
}

/// Copies a folder recursively (files only; no symlinks expected).
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for e in fs::read_dir(src).unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display())) {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap_or_else(|err| panic!("copy {}: {err}", e.path().display()));
        }
    }
}

/// A short random-ish hex string (time + pid + counter), for unique names and markers.
pub fn nonce() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = unix_now();
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{:x}{:05x}{:x}", t.as_micros() & 0xffff_ffff, std::process::id() & 0xfffff, n)
}

/// A copy of the `container` fixture in a fresh temp dir whose marker is `marker` instead of
/// `berth-fixture-container` (so its image is unique to the test).
pub fn container_app_with_marker(marker: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("berth-e2e-src-").tempdir().expect("temp source dir");
    copy_dir(&fixture_app("container"), dir.path());
    set_container_marker(dir.path(), marker);
    dir
}

/// Rewrites the marker of a copy of the `container` fixture in `dir`.
pub fn set_container_marker(dir: &Path, marker: &str) {
    let server = dir.join("server.py");
    let text = fs::read_to_string(&server).expect("read server.py");
    let line = text
        .lines()
        .find(|l| l.starts_with("MARKER = "))
        .expect("the container fixture's server.py has a `MARKER = ` line")
        .to_string();
    let text = text.replace(&line, &format!("MARKER = \"{marker}\""));
    fs::write(&server, text).expect("write server.py");
}

/// Runs `git` in `dir` with a fixed identity; panics on failure; returns trimmed stdout.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git")
        .args([
            "-c",
            "user.name=berth-test",
            "-c",
            "user.email=berth-test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null"));
    assert!(out.ok(), "git {args:?} in {} failed: {out}", dir.display());
    out.stdout.trim().to_string()
}

/// `docker image inspect -f {{.Id}} NAME`, or `None` when the image does not exist.
pub fn image_id(name: &str) -> Option<String> {
    let out = docker(&["image", "inspect", "-f", "{{.Id}}", name]);
    out.ok().then(|| out.stdout.trim().to_string())
}

/// Removes the named images when dropped (not forced: images still in use stay).
pub struct ImageCleanup(pub Vec<String>);

impl ImageCleanup {
    pub fn add(&mut self, image: impl Into<String>) {
        let image = image.into();
        if !image.is_empty() && !self.0.contains(&image) {
            self.0.push(image);
        }
    }
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = docker(&["rmi", i]);
        }
    }
}

/// A status and text body.
#[derive(Debug, Clone)]
pub struct Got {
    pub status: u16,
    pub body: String,
    pub content_type: String,
    pub took: Duration,
}

/// GET `url` with optional extra headers; `Err` on a transport error.
pub async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
    let start = Instant::now();
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e:?}"))?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.text().await.map_err(|e| format!("GET {url}: body: {e:?}"))?;
    Ok(Got { status, body, content_type, took: start.elapsed() })
}

/// A client like [`client_for`] with a longer overall timeout (for first requests that build).
pub fn slow_client(hosts: &[&str], timeout: Duration) -> reqwest::Client {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .resolve("localhost", lo);
    for h in hosts {
        b = b.resolve(h, lo);
    }
    b.build().expect("build reqwest client")
}

/// GETs `url` until it answers 200 with a body containing `marker`, retrying on 503 (still
/// starting) and transport errors, up to `timeout`. Any other status ends the wait at once.
/// Returns the last answer (or the last error).
pub async fn get_until_marker(
    client: &reqwest::Client,
    url: &str,
    marker: &str,
    timeout: Duration,
) -> Result<Got, String> {
    let start = Instant::now();
    loop {
        let r = get(client, url, &[]).await;
        match &r {
            Ok(g) if g.status == 200 && g.body.contains(marker) => return r,
            Ok(g) if g.status != 503 && g.status != 200 => return r,
            _ => {}
        }
        if start.elapsed() > timeout {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Berth {
    /// Runs the berth CLI against this home from the working folder `cwd`.
    pub fn cli_in(&self, cwd: &Path, args: &[&str]) -> CmdOut {
        run(Command::new(BERTH)
            .args(args)
            .current_dir(cwd)
            .env("BERTH_HOME", &self.home_path)
            .env_remove("RUST_LOG")
            .env_remove("BERTH_LOG"))
    }
}

/// `docker inspect -f {{.Image}} CONTAINER` (the image id a container runs).
pub fn container_image_id(container: &str) -> Option<String> {
    let out = docker(&["inspect", "-f", "{{.Image}}", container]);
    out.ok().then(|| out.stdout.trim().to_string())
}

// ---- staged-config helpers ----
// Used by e2e_staged.rs and e2e_secrets.rs (stage/prod variants, versions, params, secrets).

impl Berth {
    /// Containers (id, state) of one variant (`prod` or `stage`) of an app, selected by the
    /// labels `berth.app.id`, `berth.instance` and `berth.variant`.
    pub fn containers_of_variant(&self, app_id: &str, variant: &str) -> Vec<(String, String)> {
        let mut filters = self.app_filters(app_id);
        filters.push("--filter".into());
        filters.push(format!("label=berth.variant={variant}"));
        docker_ps(&filters)
    }

    /// The ids of the running containers of one variant (`prod` or `stage`) of an app.
    pub fn running_variant(&self, app_id: &str, variant: &str) -> Vec<String> {
        self.containers_of_variant(app_id, variant)
            .into_iter()
            .filter(|(_, s)| s == "running")
            .map(|(id, _)| id)
            .collect()
    }

    /// The single running container of one variant of an app (fails the test otherwise).
    #[track_caller]
    pub fn single_running_variant(&self, app_id: &str, variant: &str) -> String {
        let r = self.running_variant(app_id, variant);
        if r.len() != 1 {
            let all = self.containers_of_variant(app_id, variant);
            self.fail(format!("expected exactly one running {variant} container for app {app_id}, found {all:?}"));
        }
        r[0].clone()
    }

    /// `berth version list -f json APP_PATH`, raw stdout (asserts exit 0).
    #[track_caller]
    pub fn version_list_raw(&self, app_path: &str) -> String {
        self.cli_ok(&["version", "list", "-f", "json", app_path]).stdout
    }

    /// `berth version list -f json APP_PATH`, parsed; asserts it is an array.
    #[track_caller]
    pub fn version_list(&self, app_path: &str) -> Vec<Value> {
        let raw = self.version_list_raw(app_path);
        match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Array(a)) => a,
            other => self.fail(format!("version list -f json is not a JSON array: {other:?}\nraw: {raw}")),
        }
    }

    /// The version numbers marked `prod: true` / `stage: true` in `version list -f json`.
    #[track_caller]
    pub fn prod_and_stage_versions(&self, app_path: &str) -> (Vec<i64>, Vec<i64>) {
        let vs = self.version_list(app_path);
        let pick = |key: &str| -> Vec<i64> {
            vs.iter().filter(|v| v[key] == Value::Bool(true)).filter_map(|v| v["version"].as_i64()).collect()
        };
        (pick("prod"), pick("stage"))
    }

    /// `berth param list APP_PATH` stdout (asserts exit 0).
    #[track_caller]
    pub fn param_list(&self, app_path: &str) -> String {
        self.cli_ok(&["param", "list", app_path]).stdout
    }
}

/// `docker inspect -f FORMAT CONTAINER`, trimmed (panics if the container is gone).
#[track_caller]
pub fn inspect(container: &str, format: &str) -> String {
    let out = docker(&["inspect", "-f", format, container]);
    assert!(out.ok(), "docker inspect -f {format} {container} failed: {out}");
    out.stdout.trim().to_string()
}

/// Parses the `K=V` lines of an env listing (the fasthtml fixture's `/env`, or `env` output),
/// tolerating HTML tags around or between the lines.
pub fn parse_env_listing(body: &str) -> std::collections::BTreeMap<String, String> {
    let mut text = String::with_capacity(body.len());
    let mut in_tag = false;
    for ch in body.chars() {
        match ch {
            '<' => {
                in_tag = true;
                text.push('\n');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some((k, v)) = line.split_once('=') {
            let key_ok = !k.is_empty()
                && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            if key_ok {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// GETs `url` until it answers something other than 503 (still starting) or a transport
/// error, up to `timeout`; returns that first real answer (or the last error).
pub async fn get_settled(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<Got, String> {
    let start = Instant::now();
    loop {
        let r = get(client, url, &[]).await;
        match &r {
            Ok(g) if g.status != 503 => return r,
            _ => {}
        }
        if start.elapsed() > timeout {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A random lowercase hex string of `n` bytes (from /dev/urandom), for secret values.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Files (recursively) under `dir` whose raw bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    fn walk(dir: &Path, needle: &[u8], out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(&p, needle, out);
            } else if ft.is_file() {
                if let Ok(bytes) = fs::read(&p) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        out.push(p);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    if !needle.is_empty() {
        walk(dir, needle, &mut out);
    }
    out
}
// ---- end of staged-config helpers ----

impl Berth {
    /// Containers (id, name, state) of an app whose name contains `-<variant>-` (`prod` or
    /// `stage`), from `docker ps -a`.
    pub fn variant_containers(&self, app_id: &str, variant: &str) -> Vec<(String, String, String)> {
        let filters = self.app_filters(app_id);
        let mut args: Vec<&str> = vec!["ps", "-a", "--no-trunc"];
        args.extend(filters.iter().map(String::as_str));
        args.extend(["--format", "{{.ID}} {{.Names}} {{.State}}"]);
        let out = docker(&args);
        assert!(out.ok(), "docker ps failed: {out}");
        let needle = format!("-{variant}-");
        out.stdout
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.to_string(), it.next().unwrap_or("").to_string()))
            })
            .filter(|(_, name, _)| name.contains(&needle))
            .collect()
    }
}

/// The image name a container was created from (`docker inspect -f {{.Config.Image}}`).
pub fn container_image_name(container: &str) -> Option<String> {
    let out = docker(&["inspect", "-f", "{{.Config.Image}}", container]);
    out.ok().then(|| out.stdout.trim().to_string())
}

/// The app path of an app's stage: `<path>_cl_stage` (`/_cl_stage` for an app at `/`).
pub fn stage_path(path: &str) -> String {
    if path == "/" {
        "/_cl_stage".to_string()
    } else {
        format!("{path}_cl_stage")
    }
}

impl Berth {
    /// Creates a python-flask app at `app_path` whose base image does not exist
    /// (`PYTHON_VERSION=4invalid-slim`): its first request's build fails.
    #[track_caller]
    pub fn create_with_missing_base_image(&self, app_path: &str) {
        let src = fixture_app("python-flask");
        self.cli_ok(&[
            "app",
            "create",
            "--spec",
            "python-flask",
            "--carg",
            "PYTHON_VERSION=4invalid-slim",
            src.to_str().unwrap(),
            app_path,
        ]);
    }
}

/// A TLS connection to 127.0.0.1:`port` for `host` that accepts the self-signed certificate and
/// offers only HTTP/1.1 (for WebSocket upgrades over HTTPS).
pub async fn tls_connect_h1(port: u16, host: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(noverify::NoVerify(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to berth HTTPS");
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("server name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}
