//! Server start-up and shutdown: the home folder, listeners (HTTP, HTTPS, admin socket), TLS,
//! signals and graceful shutdown. Holds no app logic: it wires `store`, `engine`, `apps`,
//! `proxy` and the admin API together and runs them.

mod admin;
mod admin_declare;
mod http;
pub mod tls;
pub mod webhook;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::apps::Apps;
use crate::config::Home;
use crate::engine::Engine;
use crate::proxy::Proxy;
use crate::store::Store;

/// Runs the server in the foreground until SIGTERM, SIGINT or `berth server stop`.
pub async fn run(home: Home) -> anyhow::Result<()> {
    let config = Arc::new(home.load_config()?);
    config.acme.validate(config.http.port >= 0, config.https.port >= 0)?;
    crate::metrics::configure(&config.metrics)?;
    // Everything berth writes in its home (database, build logs, snapshots) is owner-only.
    crate::source::restrict_umask();
    std::fs::create_dir_all(&home.root).with_context(|| format!("cannot create {}", home.root.display()))?;
    secure_home(&home).with_context(|| format!("cannot make {} owner-only", home.root.display()))?;
    let run_dir = home.run_dir();
    std::fs::create_dir_all(&run_dir)?;
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))?;
    let socket_path = home.socket();
    clear_stale_socket(&socket_path).await?;

    let http_listener = bind("http", &config.http.host, config.http.port).await?;
    let https_listener = bind("https", &config.https.host, config.https.port).await?;
    let resolver = match &https_listener {
        Some(_) => Some(Arc::new(tls::CertResolver::load(&home.cert_dir(&config))?)),
        None => None,
    };
    let tls = match &resolver {
        Some(resolver) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone())?)),
        None => None,
    };
    let acme_http = Arc::new(crate::acme::HttpChallenges::default());

    let instance = instance_id(&home)?;
    let store = Store::open(&home.database()).await.context("cannot open the metadata database")?;
    let engine = Engine::open(&config.engine.endpoint).await?;
    let apps = Apps::load(config.clone(), home.clone(), instance, store.clone(), engine).await?;
    // Admin changes, also those a webhook starts: shutdown waits for them.
    let changes = tokio_util::task::TaskTracker::new();
    let webhooks = webhook::Webhooks { apps: apps.clone(), changes: changes.clone() };
    let auth = Arc::new(crate::auth::Auth::load(&home, &config)?);
    let frontend = Arc::new(http::Frontend {
        apps: apps.clone(),
        proxy: Proxy::new(&config.proxy)?,
        webhooks,
        acme_http: acme_http.clone(),
        auth,
    });

    let admin_listener =
        UnixListener::bind(&socket_path).with_context(|| format!("cannot bind {}", socket_path.display()))?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))?;

    let stop = CancellationToken::new();
    let acme_task = match resolver.filter(|_| config.acme.enabled()) {
        Some(resolver) => {
            let route_apps = apps.clone();
            let app_domains = Box::new(move || route_apps.routes().hosts().map(String::from).collect());
            let acme = crate::acme::Acme::new(
                config.acme.clone(),
                config.http.port >= 0,
                &home.cert_dir(&config),
                resolver,
                acme_http,
                app_domains,
            );
            Some(tokio::spawn(acme.run(stop.clone())))
        }
        None => None,
    };
    let accept_cancel = CancellationToken::new();
    let graceful = Arc::new(GracefulShutdown::new());
    let mut listeners = Vec::new();
    for (listener, tls) in [(http_listener, None), (https_listener, tls)] {
        if let Some(listener) = listener {
            listeners.push(tokio::spawn(http::serve(
                listener,
                tls,
                frontend.clone(),
                graceful.clone(),
                accept_cancel.clone(),
            )));
        }
    }
    let admin_state = Arc::new(admin::AdminState {
        apps: apps.clone(),
        config: config.clone(),
        stop: stop.clone(),
        changes,
        audit: crate::audit::AuditLog { store: store.clone() },
    });
    let audit_pruner = crate::audit::spawn_pruner(store.clone(), config.audit.retention_days, stop.clone());
    let admin_stop = stop.clone();
    let admin_router = admin::router(admin_state.clone());
    let admin_task = tokio::spawn(async move {
        let admin_service = admin_router.into_make_service_with_connect_info::<crate::audit::Requester>();
        axum::serve(admin_listener, admin_service)
            .with_graceful_shutdown(async move { admin_stop.cancelled().await })
            .await
    });

    let show = |scheme: &str, l: &crate::config::Listener| {
        if l.port > 0 {
            format!("{scheme}://{}:{}", l.host, l.port)
        } else {
            format!("{scheme} disabled")
        }
    };
    let https_shown = crate::config::Listener { host: config.https.host.clone(), port: config.https.port };
    tracing::info!(
        "berth server listening on {} and {}; admin socket {}",
        show("http", &config.http),
        show("https", &https_shown),
        socket_path.display()
    );

    wait_for_shutdown(&stop).await;
    tracing::info!("shutting down: no new connections, waiting for in-flight requests");
    stop.cancel();
    accept_cancel.cancel();
    for l in listeners {
        let _ = l.await;
    }
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let graceful = Arc::try_unwrap(graceful).expect("the listeners have ended");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests still running after {}s; closing them", grace.as_secs());
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    if let Some(acme_task) = acme_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), acme_task).await;
    }
    // Admin changes whose client went away still run to their end: wait for them (bounded)
    // before the app tasks stop and the store closes.
    let unfinished = admin_state.finish_changes(grace).await;
    if unfinished > 0 {
        tracing::warn!("{unfinished} admin change(s) still running after {}s; stopping them", grace.as_secs());
    }
    let _ = audit_pruner.await;
    apps.shutdown().await;
    store.close().await;
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!("server stopped");
    Ok(())
}

async fn wait_for_shutdown(stop: &CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = stop.cancelled() => {}
    }
}

/// Binds a listener; port -1 (or any negative) disables it.
async fn bind(what: &str, host: &str, port: i32) -> anyhow::Result<Option<TcpListener>> {
    if port < 0 {
        return Ok(None);
    }
    let port = u16::try_from(port).with_context(|| format!("{what} port {port} is out of range"))?;
    let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let listener = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen for {what} on {addr}"))?;
    Ok(Some(listener))
}

/// Refuses to start when another server answers on the socket; removes a dead socket file.
async fn clear_stale_socket(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if UnixStream::connect(path).await.is_ok() {
        anyhow::bail!("another berth server is already running (admin socket {})", path.display());
    }
    std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))
}

/// Makes the home's build logs and source snapshots owner-only: folders 0700, log files 0600
/// (a home made by an older berth, or touched by hand, is fixed at every start). The database
/// is the store's to secure. Files inside a snapshot keep their modes (they go into images as
/// they are); the snapshot folders around them admit only the owner.
fn secure_home(home: &Home) -> std::io::Result<()> {
    let private = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    for dir in [home.logs_dir(), home.sources_dir()] {
        std::fs::create_dir_all(&dir)?;
        private(&dir, 0o700)?;
    }
    for entry in std::fs::read_dir(home.logs_dir())?.flatten() {
        if entry.file_type()?.is_file() {
            private(&entry.path(), 0o600)?;
        }
    }
    for app in std::fs::read_dir(home.sources_dir())?.flatten() {
        if app.file_type()?.is_dir() {
            private(&app.path(), 0o700)?;
            for snapshot in std::fs::read_dir(app.path())?.flatten() {
                if snapshot.file_type()?.is_dir() {
                    private(&snapshot.path(), 0o700)?;
                }
            }
        }
    }
    Ok(())
}

/// A random id for this home, stored in `instance_id`; it labels the containers berth creates
/// so that several berth homes can share one engine without touching each other's containers.
fn instance_id(home: &Home) -> anyhow::Result<String> {
    let file = home.instance_id_file();
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = crate::ids::random_id(12);
    std::fs::write(&file, format!("{id}\n")).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(id)
}
