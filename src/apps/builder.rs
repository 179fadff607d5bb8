//! Running image builds for apps: one build per image name at a time (a second app with the
//! same inputs waits and then finds the image), output streamed to the server log and to the
//! app's build log file (`berth app logs --build`), bounded by `build_timeout_secs`.
//!
//! Each app's latest build has a typed [`BuildStatus`] (running, succeeded, failed, timed out,
//! cancelled) published on a watch channel, so a follower of the build log knows when the
//! build ended without reading the log's text.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::plan::{self, BuildPlan};
use crate::engine::Engine;
use crate::secrets::Secrets;

/// Lines of build output kept for the 502 body of a failed build.
const TAIL_LINES: usize = 30;

/// Where an app's latest build is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildStatus {
    Running,
    Succeeded,
    /// The build ran and failed; `error` is the engine's (or berth's) reason.
    Failed {
        error: String,
    },
    /// The build did not finish within `build_timeout_secs` and was abandoned.
    TimedOut {
        after: Duration,
    },
    /// The build was abandoned before it finished (the app was deleted, or its waiter left).
    Cancelled,
}

impl BuildStatus {
    pub fn is_finished(&self) -> bool {
        !matches!(self, BuildStatus::Running)
    }
}

/// An app's build log file and the status of its latest build. The status is `None` when no
/// build ran for the app since the server started (the file, if any, is a finished build's).
pub struct BuildLog {
    pub file: PathBuf,
    pub status: watch::Receiver<Option<BuildStatus>>,
}

pub struct Builder {
    engine: Engine,
    logs_dir: PathBuf,
    timeout: Duration,
    secrets: Arc<Secrets>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per app id: the status of its latest build.
    statuses: Mutex<HashMap<String, watch::Sender<Option<BuildStatus>>>>,
}

/// A build that is running: its log file and status. Dropped before [`RunningBuild::finish`]
/// (the build's future was dropped), the build counts as cancelled.
struct RunningBuild {
    log: std::fs::File,
    status: watch::Sender<Option<BuildStatus>>,
    finished: bool,
}

impl RunningBuild {
    /// Writes the build's last log line, then publishes its status: a follower that sees the
    /// status has the whole log.
    fn finish(mut self, status: BuildStatus, last_line: &str) {
        let _ = writeln!(self.log, "{last_line}");
        self.status.send_replace(Some(status));
        self.finished = true;
    }
}

impl Drop for RunningBuild {
    fn drop(&mut self) {
        if !self.finished {
            let _ = writeln!(self.log, "build cancelled");
            self.status.send_replace(Some(BuildStatus::Cancelled));
        }
    }
}

impl Builder {
    pub fn new(engine: Engine, logs_dir: PathBuf, timeout: Duration, secrets: Arc<Secrets>) -> Builder {
        Builder {
            engine,
            logs_dir,
            timeout,
            secrets,
            locks: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
        }
    }

    pub fn log_file(&self, app_id: &str) -> PathBuf {
        self.logs_dir.join(format!("{app_id}.build.log"))
    }

    /// The app's build log and a receiver of its latest build's status.
    pub fn build_log(&self, app_id: &str) -> BuildLog {
        BuildLog { file: self.log_file(app_id), status: self.status_sender(app_id).subscribe() }
    }

    /// Forgets a deleted app's build status (a follower still holding a receiver keeps it).
    pub fn forget(&self, app_id: &str) {
        self.statuses.lock().unwrap().remove(app_id);
    }

    /// Whether the builder holds a build status for the app.
    pub fn has_status(&self, app_id: &str) -> bool {
        self.statuses.lock().unwrap().contains_key(app_id)
    }

    fn status_sender(&self, app_id: &str) -> watch::Sender<Option<BuildStatus>> {
        self.statuses.lock().unwrap().entry(app_id.to_string()).or_insert_with(|| watch::channel(None).0).clone()
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
        std::fs::create_dir_all(&self.logs_dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.log_file(app_id)).map_err(|e| e.to_string())?;
        let status = self.status_sender(app_id);
        status.send_replace(Some(BuildStatus::Running));
        let run = RunningBuild { log, status, finished: false };
        let started = Instant::now();
        let build_once_more_if_cache_lost = async {
            match self.build(app_id, plan, &run.log).await {
                // Another build or a removal (a replaced image, with its untagged parents)
                // deleted a cached layer this build had picked: the inputs are fine, build again.
                Err((error, _)) if lost_cache_image(&error) => {
                    let note = format!("{error}: a cached layer was removed during the build; building again");
                    tracing::warn!(app = %app_id, "{note}");
                    let _ = writeln!(&run.log, "{note}");
                    self.build(app_id, plan, &run.log).await
                }
                other => other,
            }
        };
        let outcome = tokio::time::timeout(self.timeout, build_once_more_if_cache_lost).await;
        crate::metrics::get().build(started.elapsed(), matches!(outcome, Ok(Ok(()))));
        match outcome {
            Ok(Ok(())) => {
                let done = format!("built {} in {:.1}s", plan.image, started.elapsed().as_secs_f64());
                tracing::info!(app = %app_id, "{done}");
                run.finish(BuildStatus::Succeeded, &done);
                Ok(true)
            }
            Ok(Err((error, tail))) => {
                let message = format!("build failed: {error}");
                run.finish(BuildStatus::Failed { error }, &message);
                Err(format!("{message}\nlast build output:\n{}", tail.join("\n")))
            }
            Err(_) => {
                let message = format!("build timed out: it did not finish within {}s", self.timeout.as_secs());
                run.finish(BuildStatus::TimedOut { after: self.timeout }, &message);
                Err(message)
            }
        }
    }

    /// Runs the build, writing its output to `log`; a failure carries the error and the last
    /// lines of output.
    async fn build(
        &self,
        app_id: &str,
        plan: &BuildPlan,
        mut log: &std::fs::File,
    ) -> Result<(), (String, Vec<String>)> {
        let no_tail = |e: String| (e, Vec::new());
        let (spec, snapshot) = (plan.spec.clone(), plan.snapshot.clone());
        let (tar, containerfile) = tokio::task::spawn_blocking(move || {
            let (ctx, file) = plan::assemble_context(&spec, &snapshot)?;
            Ok::<_, String>((ctx.tar().map_err(|e| format!("cannot pack the build context: {e}"))?, file))
        })
        .await
        .map_err(|e| no_tail(e.to_string()))?
        .map_err(no_tail)?;
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
        let args: HashMap<String, String> =
            self.secrets.resolve_all(&pairs).await.map_err(no_tail)?.into_iter().collect();
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
        result.map_err(|e| (e.to_string(), tail.into_iter().collect()))
    }
}

/// Whether a build failed because an image it used from the build cache disappeared: the
/// engine names a cached layer by its bare digest (`unable to find image "sha256:..."`), never
/// a base image the Containerfile names.
fn lost_cache_image(error: &str) -> bool {
    error.contains("unable to find image \"sha256:") || error.contains("No such image: sha256:")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lost_cache_layer_is_told_from_a_missing_base_image() {
        assert!(super::lost_cache_image(
            r#"unable to find image "sha256:c61b919e95df6b0fbb6697fd4aee74217a2845836850bb864855e91a37849d7e""#
        ));
        assert!(!super::lost_cache_image("base image python:4invalid-slim not found locally and pulling it failed: x"));
        assert!(!super::lost_cache_image(r#"unable to find image "python:4invalid-slim""#));
    }

    use super::*;

    fn running(dir: &tempfile::TempDir) -> (RunningBuild, watch::Receiver<Option<BuildStatus>>, PathBuf) {
        let file = dir.path().join("app.build.log");
        let (status, rx) = watch::channel(Some(BuildStatus::Running));
        (RunningBuild { log: std::fs::File::create(&file).unwrap(), status, finished: false }, rx, file)
    }

    #[test]
    fn a_finished_build_writes_its_last_line_then_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let (run, rx, file) = running(&dir);
        run.finish(BuildStatus::TimedOut { after: Duration::from_secs(3) }, "build timed out: 3s");
        assert_eq!(*rx.borrow(), Some(BuildStatus::TimedOut { after: Duration::from_secs(3) }));
        assert_eq!(std::fs::read_to_string(file).unwrap(), "build timed out: 3s\n");
    }

    #[test]
    fn a_dropped_build_is_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let (run, rx, file) = running(&dir);
        drop(run);
        assert_eq!(*rx.borrow(), Some(BuildStatus::Cancelled));
        assert!(rx.borrow().as_ref().unwrap().is_finished());
        assert_eq!(std::fs::read_to_string(file).unwrap(), "build cancelled\n");
    }
}
