//! End-to-end tests of ACME certificates (`[acme]`) against pebble, Let's Encrypt's test ACME
//! server (Debian package `pebble`, which `.ci/run` installs). Each test starts its own
//! `pebble-challtestsrv` (a DNS server answering 127.0.0.1 for every name) and `pebble` on free
//! 127.0.0.1 ports, with pebble's validation ports set to the berth server's HTTP and HTTPS
//! listeners, and a test CA (made here with rcgen) for pebble's own HTTPS that berth trusts via
//! `ca_cert_file`. Without pebble the tests print why and pass, unless
//! `BERTH_TEST_REQUIRE_PEBBLE` is set.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, wait_until, Berth};

/// Whether pebble is installed; panics when it is required and missing.
fn pebble_available(test: &str) -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|bin| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            std::env::var_os("BERTH_TEST_REQUIRE_PEBBLE").is_none(),
            "{test}: BERTH_TEST_REQUIRE_PEBBLE is set but pebble or pebble-challtestsrv is not installed"
        );
        eprintln!("{test}: skipped: pebble is not installed (apt-get install pebble)");
    }
    found
}

/// A running pebble with its DNS stand-in; both are killed on drop.
struct Pebble {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    /// The CA that signed pebble's HTTPS certificate (for `ca_cert_file`).
    ca_file: PathBuf,
    directory_url: String,
    management_port: u16,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = tempfile::Builder::new().prefix("berth-pebble-").tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "berth test ACME server CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();

        let (listen_port, management_port, dns_port, dns_management_port) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_file = dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let dir_path = dir.path().to_path_buf();
        let log = |name: &str| std::fs::File::create(dir_path.join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management_port}")])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .unwrap();
        let mut pebble = Pebble {
            dir,
            children: vec![dns],
            ca_file,
            directory_url: format!("https://127.0.0.1:{listen_port}/dir"),
            management_port,
        };
        let server = Command::new("pebble")
            .args(["-config", config_file.to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap();
        pebble.children.push(server);
        let up = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            TcpStream::connect(("127.0.0.1", listen_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", dns_management_port)).is_ok()
        });
        assert!(up.is_some(), "pebble did not start:\n{}", pebble.logs());
        pebble
    }

    fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.log", "challtestsrv.err"]
            .iter()
            .map(|f| format!("== {f}\n{}", std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pebble's root certificate (it makes a new one at each start): the trust anchor of the
    /// certificates it issues.
    fn root(&self) -> rustls::pki_types::CertificateDer<'static> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca_file).unwrap()).unwrap();
        let pem = tokio::runtime::Runtime::new().unwrap().block_on(async {
            let client = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
            let resp = client.get(&url).send().await.unwrap();
            assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
            resp.text().await.unwrap()
        });
        let root = rustls_pemfile::certs(&mut pem.as_bytes()).next().expect("a root certificate").unwrap();
        root
    }

    /// The `[acme]` table pointing at this pebble, for `domain` ("": none).
    fn acme_toml(&self, domain: &str, extra: &str) -> String {
        let domains = if domain.is_empty() { String::new() } else { format!("\"{domain}\"") };
        format!(
            "\n[acme]\ndomains = [{domains}]\ndirectory_url = \"{}\"\nca_cert_file = \"{}\"\nemail = \"ops@example.com\"\n{extra}\n",
            self.directory_url,
            self.ca_file.display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A berth home with `[acme]` appended to its berth.toml (server not started).
fn berth_with_acme(configure: impl FnOnce(&Berth) -> String) -> Berth {
    let berth = Berth::configure("");
    let acme = configure(&berth);
    let mut toml = std::fs::OpenOptions::new().append(true).open(berth.home_path.join("berth.toml")).unwrap();
    toml.write_all(acme.as_bytes()).unwrap();
    berth
}

/// The leaf certificate berth serves for `domain`, verified against `root` only (so only a
/// certificate pebble issued for `domain` passes); None while the handshake fails.
fn served_cert(
    berth: &Berth,
    domain: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
) -> Result<rustls::pki_types::CertificateDer<'static>, String> {
    handshake(berth, domain, root, Vec::new())
}

fn handshake(
    berth: &Berth,
    domain: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::pki_types::CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    let name = rustls::pki_types::ServerName::try_from(domain.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", berth.https_port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(conn.peer_certificates().unwrap()[0].clone().into_owned())
}

fn serial_and_issuer(der: &[u8]) -> (String, String) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    (cert.raw_serial_as_string(), cert.issuer().to_string())
}

/// Waits until berth serves a certificate for `domain` that chains to pebble's root and differs
/// from `previous`; returns it.
fn wait_for_issued(
    berth: &Berth,
    pebble: &Pebble,
    domain: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
    previous: Option<&[u8]>,
) -> rustls::pki_types::CertificateDer<'static> {
    let mut last = Err(String::from("not tried"));
    let got = wait_until(Duration::from_secs(90), Duration::from_millis(200), || {
        last = served_cert(berth, domain, root);
        matches!(&last, Ok(der) if Some(der.as_ref()) != previous)
    });
    if got.is_none() {
        berth
            .fail(format!("no new pebble certificate served for {domain}: last handshake {last:?}\n{}", pebble.logs()));
    }
    last.unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn http01_certificate_is_obtained_stored_and_renewed() {
    if !pebble_available("http01_certificate_is_obtained_stored_and_renewed") {
        return;
    }
    let domain = "http01.berth-acme.example.com";
    let mut pebble_slot = None;
    let mut berth = berth_with_acme(|b| {
        let pebble = Pebble::start(b.http_port, b.https_port);
        let toml = pebble.acme_toml(domain, "");
        pebble_slot = Some(pebble);
        toml
    });
    let pebble = pebble_slot.unwrap();
    berth.start_server();
    let root = pebble.root();
    let first = wait_for_issued(&berth, &pebble, domain, &root, None);
    let (serial, issuer) = serial_and_issuer(&first);
    eprintln!("served: serial {serial}, issuer {issuer}");
    berth.ensure(issuer.contains("Pebble"), format!("issuer {issuer:?} is not pebble's"));
    // A name without a certificate still gets the default one, not the ACME one.
    berth.ensure(served_cert(&berth, "other.example.com", &root).is_err(), "other names keep the default certificate");

    let acme_dir = berth.home_path.join("certs").join("acme");
    berth.ensure(mode(&acme_dir) == 0o700, format!("acme folder mode {:o}", mode(&acme_dir)));
    for file in ["account.json", &format!("{domain}.key"), &format!("{domain}.crt")] {
        let m = mode(&acme_dir.join(file));
        berth.ensure(m == 0o600, format!("{file} mode {m:o}, want 600"));
    }
    berth.ensure(berth.log().contains("obtained a certificate"), "the order is logged");

    // A restart loads the stored certificate and orders nothing (not due).
    berth.stop_server();
    berth.start_server();
    let again = served_cert(&berth, domain, &root).unwrap_or_else(|e| berth.fail(format!("after restart: {e}")));
    berth.ensure(again == first, "the stored certificate is served after a restart");
    std::thread::sleep(Duration::from_secs(2));
    berth.ensure(
        berth.log().matches("obtained a certificate").count() == 1,
        "a certificate that is not due is not ordered again",
    );

    // Renewal: with renew_before_days above the certificate's lifetime it is due at start.
    berth.stop_server();
    let toml_path = berth.home_path.join("berth.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, toml.replace("[acme]\n", "[acme]\nrenew_before_days = 100000\n")).unwrap();
    berth.start_server();
    let renewed = wait_for_issued(&berth, &pebble, domain, &root, Some(&first));
    let (new_serial, _) = serial_and_issuer(&renewed);
    berth.ensure(new_serial != serial, format!("renewal served a new serial ({serial} -> {new_serial})"));
    let stored = std::fs::read(acme_dir.join(format!("{domain}.crt"))).unwrap();
    let stored_der = rustls_pemfile::certs(&mut stored.as_slice()).next().unwrap().unwrap();
    berth.ensure(stored_der.as_ref() == renewed.as_ref(), "the renewed certificate is stored");
    berth.ensure(
        !acme_dir.read_dir().unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "new")),
        "no partial files are left",
    );
}

#[test]
fn tls_alpn01_certificate_is_obtained() {
    if !pebble_available("tls_alpn01_certificate_is_obtained") {
        return;
    }
    let domain = "alpn.berth-acme.example.com";
    let mut pebble_slot = None;
    let mut berth = berth_with_acme(|b| {
        // HTTP-01 validation would go to a closed port: only TLS-ALPN-01 can succeed.
        let pebble = Pebble::start(free_port(), b.https_port);
        let toml = pebble.acme_toml(domain, "challenge = \"tls-alpn-01\"");
        pebble_slot = Some(pebble);
        toml
    });
    let pebble = pebble_slot.unwrap();
    berth.start_server();
    let root = pebble.root();
    let cert = wait_for_issued(&berth, &pebble, domain, &root, None);
    let (_, issuer) = serial_and_issuer(&cert);
    berth.ensure(issuer.contains("Pebble"), format!("issuer {issuer:?} is not pebble's"));
    // With no challenge pending, an `acme-tls/1` hello gets no certificate at all.
    let acme_hello = handshake(&berth, domain, &root, vec![b"acme-tls/1".to_vec()]);
    berth.ensure(acme_hello.is_err(), format!("acme-tls/1 hello without a pending challenge: {acme_hello:?}"));
}

#[test]
fn failed_order_is_logged_with_the_servers_message() {
    if !pebble_available("failed_order_is_logged_with_the_servers_message") {
        return;
    }
    let domain = "unreachable.berth-acme.example.com";
    let mut pebble_slot = None;
    let mut berth = berth_with_acme(|_| {
        // Both validation ports are closed: pebble's validation fails.
        let pebble = Pebble::start(free_port(), free_port());
        let toml = pebble.acme_toml(domain, "");
        pebble_slot = Some(pebble);
        toml
    });
    let pebble = pebble_slot.unwrap();
    berth.start_server();
    let logged = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        berth.log().contains("ACME certificate order failed")
    });
    berth.ensure(logged.is_some(), format!("the failure is logged\n{}", pebble.logs()));
    let log = berth.log();
    let line = log.lines().find(|l| l.contains("ACME certificate order failed")).unwrap();
    eprintln!("logged: {line}");
    berth.ensure(line.contains("retry in 60s") && line.contains("connection refused"), format!("line: {line}"));
    // Requests are served meanwhile (the default certificate).
    let out = berth.cli(&["app", "list"]);
    berth.ensure(out.ok(), "the server keeps serving");
}

#[test]
fn wildcard_domain_is_refused_at_start() {
    let berth = berth_with_acme(|_| "\n[acme]\ndomains = [\"*.example.com\"]\n".to_string());
    let out =
        Command::new(common::BERTH).args(["server", "start"]).env("BERTH_HOME", &berth.home_path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start must fail: {stderr}");
    assert!(stderr.contains("wildcard") && common::is_single_error_line(&stderr), "stderr: {stderr}");
}

#[test]
fn auto_mode_covers_app_domains() {
    if !pebble_available("auto_mode_covers_app_domains") {
        return;
    }
    let domain = "auto.berth-acme.example.com";
    let mut pebble_slot = None;
    let mut berth = berth_with_acme(|b| {
        let pebble = Pebble::start(b.http_port, b.https_port);
        let toml = pebble.acme_toml("", "auto = true");
        pebble_slot = Some(pebble);
        toml
    });
    let pebble = pebble_slot.unwrap();
    berth.start_server();
    berth.create_image_app("nginx", 80, &format!("{domain}:/"), &[]);
    berth.create_image_app("nginx", 80, "local.localhost:/", &[]);
    // The check at start covers the app domains that exist then.
    berth.stop_server();
    berth.start_server();
    let root = pebble.root();
    let cert = wait_for_issued(&berth, &pebble, domain, &root, None);
    let (_, issuer) = serial_and_issuer(&cert);
    berth.ensure(issuer.contains("Pebble"), format!("issuer {issuer:?} is not pebble's"));
    let log = berth.log();
    berth.ensure(
        !log.lines().any(|l| l.contains("ordering a certificate") && l.contains("localhost")),
        "names under localhost get no ACME order",
    );
}
