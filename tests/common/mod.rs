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
    let out = docker(&["inspect", "-f", "{{.State.Running}}", id]);
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
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open server.log");
        let log2 = log.try_clone().expect("clone log fd");
        let mut cmd = Command::new(BERTH);
        cmd.args(["server", "start"])
            .env("BERTH_HOME", &self.home_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        // Optional log filter override for debugging, e.g. BERTH_TEST_LOG=debug.
        if let Ok(filter) = std::env::var("BERTH_TEST_LOG") {
            cmd.env("BERTH_LOG", &filter).env("RUST_LOG", &filter);
        }
        let child = cmd.spawn().expect("spawn berth server start");
        self.child = Some(child);
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
        let filters = self.app_filters(app_id);
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
