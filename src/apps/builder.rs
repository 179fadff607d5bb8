//! Running image builds for apps: one build per image name at a time (a second app with the
//! same inputs waits and then finds the image), output streamed to the server log and to the
//! app's build log file (`berth app logs --build`), bounded by `build_timeout_secs`.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::plan::{self, BuildPlan};
use crate::engine::Engine;
use crate::secrets::Secrets;

/// Lines of build output kept for the 502 body of a failed build.
const TAIL_LINES: usize = 30;

pub struct Builder {
    engine: Engine,
    logs_dir: PathBuf,
    timeout: Duration,
    secrets: Arc<Secrets>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Builder {
    pub fn new(engine: Engine, logs_dir: PathBuf, timeout: Duration, secrets: Arc<Secrets>) -> Builder {
        Builder { engine, logs_dir, timeout, secrets, locks: Mutex::new(HashMap::new()) }
    }

    pub fn log_file(&self, app_id: &str) -> PathBuf {
        self.logs_dir.join(format!("{app_id}.build.log"))
    }

    /// Makes sure the plan's image exists, building it when missing; `on_build` runs just
    /// before a build really starts. Returns whether a build ran.
    pub async fn ensure(&self, app_id: &str, plan: &BuildPlan, on_build: impl FnOnce()) -> Result<bool, String> {
        let lock = self.locks.lock().unwrap().entry(plan.image.clone()).or_default().clone();
        let _one_build = lock.lock().await;
        if self.engine.image_exists(&plan.image).await.map_err(|e| e.to_string())? {
            return Ok(false);
        }
        on_build();
        match tokio::time::timeout(self.timeout, self.build(app_id, plan)).await {
            Ok(result) => result.map(|()| true),
            Err(_) => Err(format!("the build did not finish within {}s", self.timeout.as_secs())),
        }
    }

    async fn build(&self, app_id: &str, plan: &BuildPlan) -> Result<(), String> {
        let (spec, snapshot) = (plan.spec.clone(), plan.snapshot.clone());
        let (tar, containerfile) = tokio::task::spawn_blocking(move || {
            let (ctx, file) = plan::assemble_context(&spec, &snapshot)?;
            Ok::<_, String>((ctx.tar().map_err(|e| format!("cannot pack the build context: {e}"))?, file))
        })
        .await
        .map_err(|e| e.to_string())??;
        std::fs::create_dir_all(&self.logs_dir).map_err(|e| e.to_string())?;
        let mut log = std::fs::File::create(self.log_file(app_id)).map_err(|e| e.to_string())?;
        let header = format!("building {} (spec {}, {} bytes of context)", plan.image, plan.spec.name, tar.len());
        tracing::info!(app = %app_id, "{header}");
        let _ = writeln!(log, "{header}");
        if !plan.build_args.is_empty() {
            // As set (secret templates, never their values).
            let args: Vec<String> = plan.build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(log, "build args: {}", args.join(" "));
        }
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        // Build args may hold secrets: resolved now, for this build only.
        let pairs: Vec<(String, String)> = plan.build_args.clone().into_iter().collect();
        let args: HashMap<String, String> = self.secrets.resolve_all(&pairs).await?.into_iter().collect();
        let started = std::time::Instant::now();
        let result = self
            .engine
            .build(tar, &plan.image, &containerfile, &args, |line| {
                tracing::info!(target: "berth::build", app = %app_id, "{line}");
                let _ = writeln!(log, "{line}");
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            })
            .await;
        match result {
            Ok(()) => {
                let done = format!("built {} in {:.1}s", plan.image, started.elapsed().as_secs_f64());
                tracing::info!(app = %app_id, "{done}");
                let _ = writeln!(log, "{done}");
                Ok(())
            }
            Err(e) => {
                let _ = writeln!(log, "build failed: {e}");
                let tail: Vec<String> = tail.into_iter().collect();
                Err(format!("build failed: {e}\nlast build output:\n{}", tail.join("\n")))
            }
        }
    }
}
