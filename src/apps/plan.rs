//! From an app's record and spec to what runs: a URL to forward to, or a container plan with
//! the image to run (pulled, or built from the source snapshot with the spec's files). Also
//! the build-context assembly shared by the create-time checks and the build itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::app_path::AppPath;
use crate::build::{self, containerfile, context::BuildContext};
use crate::engine::options::{self, ContainerOptions};
use crate::specs::{Spec, SpecKind, SpecRef, UrlPlan};
use crate::store::AppConfig;

#[derive(Debug, Clone)]
pub enum Backend {
    Container(Box<ContainerPlan>),
    Url(UrlPlan),
}

/// A container to run for an app. `env` holds the params (with spec defaults), `CL_APP_PATH`
/// and `PORT`.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub image: ImageSource,
    pub port: u16,
    pub env: Vec<(String, String)>,
    pub preserve_host: bool,
    /// Strip the app path before forwarding (see `SpecContainer::strip_app`).
    pub strip_app: bool,
    /// Parsed `--copt` options, and the raw ones (part of the container's identity).
    pub options: ContainerOptions,
    pub raw_options: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An image to use as is (pulled if missing).
    Existing(String),
    Build(BuildPlan),
}

impl ImageSource {
    pub fn name(&self) -> &str {
        match self {
            ImageSource::Existing(name) => name,
            ImageSource::Build(b) => &b.image,
        }
    }
}

/// What to build and the name its inputs hash to.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub image: String,
    pub spec: SpecRef,
    pub snapshot: PathBuf,
    pub build_args: BTreeMap<String, String>,
}

/// The spec's files, then the source over them, filtered by `.dockerignore`; and the name of
/// the Containerfile to build with.
pub fn assemble_context(spec: &Spec, snapshot: &Path) -> Result<(BuildContext, String), String> {
    let mut ctx = BuildContext::new();
    for (name, data) in &spec.files {
        let mode = if name.ends_with(".sh") { 0o755 } else { 0o644 };
        ctx.add_file(name, data.clone(), mode);
    }
    ctx.add_dir(snapshot).map_err(|e| format!("cannot read the source snapshot {}: {e}", snapshot.display()))?;
    let (file, _) = pick_containerfile(spec, snapshot)
        .ok_or_else(|| format!("no Containerfile or Dockerfile in the source (spec {})", spec.name))?;
    ctx.apply_dockerignore(&file);
    ctx.rewrite_heredocs(&file)?;
    Ok((ctx, file))
}

/// The Containerfile to build with and its text: the source's `Containerfile`, then its
/// `Dockerfile`, then the spec's, in that order (source files win).
pub fn pick_containerfile(spec: &Spec, snapshot: &Path) -> Option<(String, String)> {
    const NAMES: [&str; 2] = ["Containerfile", "Dockerfile"];
    NAMES.iter().find_map(|f| Some((f.to_string(), std::fs::read_to_string(snapshot.join(f)).ok()?))).or_else(|| {
        NAMES.iter().find_map(|f| Some((f.to_string(), String::from_utf8_lossy(spec.files.get(*f)?).into_owned())))
    })
}

/// What create and reload learn from a fresh snapshot: the image name and the port.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub image: String,
    pub port: u16,
}

/// Checks a source snapshot against its spec (Containerfile parses, required files exist, a
/// port is known) and hashes the build inputs. Blocking: reads the snapshot.
pub fn prepare_build(
    spec: &Spec,
    snapshot: &Path,
    params: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
) -> Result<Prepared, String> {
    let (ctx, file) = assemble_context(spec, snapshot)?;
    let text = String::from_utf8_lossy(ctx.file(&file).unwrap_or_default()).into_owned();
    containerfile::check(&file, &text)?;
    for required in &spec.requires {
        if !snapshot.join(required).exists() {
            return Err(format!("a {} app needs {required} in its source", spec.name));
        }
    }
    let port = spec
        .container_port(params, containerfile::exposed_port(&text))
        .ok_or_else(|| format!("port not specified: pass --param port=N or add an EXPOSE directive to the {file}"))?;
    let mut extra: Vec<(&str, &str)> = vec![("spec", spec.name.as_str()), ("containerfile", file.as_str())];
    extra.extend(build_args.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(Prepared { image: build::image_name(&ctx.content_hash(&extra)), port })
}

/// The backend for one version of an app served at `path`.
pub fn backend(spec: &SpecRef, path: &AppPath, cfg: &AppConfig, allow_host_access: bool) -> Result<Backend, String> {
    let env_path = path.env_path().to_string();
    let options = options::parse(&cfg.container_options, allow_host_access)?;
    let container = |image: ImageSource, port: u16| {
        let mut env: Vec<(String, String)> =
            spec.effective_params(&cfg.params).into_iter().filter(|(k, _)| k != "CL_APP_PATH" && k != "PORT").collect();
        env.push(("CL_APP_PATH".into(), env_path.clone()));
        env.push(("PORT".into(), port.to_string()));
        Backend::Container(Box::new(ContainerPlan {
            image,
            port,
            env,
            preserve_host: spec.preserve_host(&cfg.params),
            strip_app: spec.container.strip_app,
            options: options.clone(),
            raw_options: cfg.container_options.clone(),
        }))
    };
    match spec.kind {
        SpecKind::Proxy => spec.url_plan(&cfg.params).map(Backend::Url).map_err(|e| e.to_string()),
        SpecKind::Image => {
            spec.check_params(&cfg.params).map_err(|e| e.to_string())?;
            let image = cfg.params.get("image").cloned().unwrap_or_default();
            let port = spec.container_port(&cfg.params, None).ok_or("param port is a required param")?;
            Ok(container(ImageSource::Existing(image), port))
        }
        SpecKind::Build => {
            let snapshot = PathBuf::from(cfg.snapshot.as_deref().ok_or("the app has no source snapshot")?);
            let image = cfg.image.clone().ok_or("the app has no image name")?;
            let exposed = pick_containerfile(spec, &snapshot).and_then(|(_, text)| containerfile::exposed_port(&text));
            let port = spec.container_port(&cfg.params, exposed).ok_or("port not specified")?;
            let plan = BuildPlan { image, spec: spec.clone(), snapshot, build_args: cfg.build_args.clone() };
            Ok(container(ImageSource::Build(plan), port))
        }
    }
}
