//! Loading specs: the folders embedded from the top-level `specs/` at build time, then the
//! folders listed in berth.toml (`spec_dirs`), which add specs or replace built-in ones of the
//! same name. Each spec folder holds `spec.toml` and the files copied into build contexts, or
//! is a Clace-format spec folder (`app.star`, `params.star`: see `declare::spec_star`). A spec
//! may also be named by the absolute path of its folder (`--spec /path/to/folder`); it is read
//! from there at its first lookup and kept for the server's life.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use include_dir::{include_dir, Dir};
use serde::Deserialize;

use super::{ParamDef, Spec, SpecContainer, SpecError, SpecKind, SpecRef};
use crate::declare::spec_star::{self, SpecStarError};

static BUILT_IN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/specs");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    #[serde(default)]
    help: String,
    #[serde(default)]
    params: Vec<ParamDef>,
    #[serde(default)]
    container: SpecContainer,
    #[serde(default)]
    requires: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    specs: BTreeMap<String, SpecRef>,
    /// Clace-format specs found in `spec_dirs` that berth cannot serve, with the reason.
    unsupported: BTreeMap<String, String>,
    /// Spec folders named by path, read at their first lookup (as `spec_dirs` are at start).
    by_path: Arc<std::sync::Mutex<BTreeMap<String, SpecRef>>>,
}

impl Catalog {
    /// The built-in specs, overlaid with every spec folder found in `extra_dirs` (each entry is
    /// a folder of spec folders).
    pub fn load(extra_dirs: &[PathBuf]) -> anyhow::Result<Catalog> {
        let mut specs = BTreeMap::new();
        let mut unsupported = BTreeMap::new();
        for dir in BUILT_IN.dirs() {
            let files: BTreeMap<String, Vec<u8>> = dir
                .files()
                .map(|f| (rel_name(dir.path(), f.path()), f.contents().to_vec()))
                .chain(nested_files(dir))
                .collect();
            let spec = parse(files, "built-in")?;
            specs.insert(spec.name.clone(), Arc::new(spec));
        }
        for root in extra_dirs {
            let entries =
                std::fs::read_dir(root).with_context(|| format!("cannot read spec folder {}", root.display()))?;
            for entry in entries {
                let path = entry?.path();
                let origin = path.display().to_string();
                if path.join("spec.toml").exists() {
                    let spec = parse(read_folder(&path)?, &origin)?;
                    specs.insert(spec.name.clone(), Arc::new(spec));
                } else if spec_star::is_spec_folder(&path) {
                    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    match spec_star::load(&name, read_folder(&path)?, &origin) {
                        Ok(spec) => {
                            unsupported.remove(&name);
                            specs.insert(name, Arc::new(spec));
                        }
                        Err(e @ SpecStarError::Unsupported { .. }) => {
                            tracing::warn!(folder = %origin, "{e}");
                            specs.remove(&name);
                            unsupported.insert(name, e.to_string());
                        }
                        Err(SpecStarError::Invalid(e)) => anyhow::bail!("spec folder {origin}: {e}"),
                    }
                }
            }
        }
        Ok(Catalog { specs, unsupported, by_path: Default::default() })
    }

    /// The spec named `name`: a catalog name, or the absolute path of a spec folder.
    pub fn lookup(&self, name: Option<&str>) -> Result<SpecRef, SpecError> {
        let name = name.ok_or_else(|| SpecError::Missing(self.names()))?;
        if name.starts_with('/') {
            let cached = self.by_path.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
            if let Some(spec) = cached {
                return Ok(spec);
            }
            // Read without the lock held; two first lookups at once read the folder twice.
            let spec = Arc::new(load_path(Path::new(name))?);
            self.by_path.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), spec.clone());
            return Ok(spec);
        }
        if let Some(reason) = self.unsupported.get(name) {
            return Err(SpecError::Folder(reason.clone()));
        }
        self.specs.get(name).cloned().ok_or_else(|| SpecError::Unknown(name.into(), self.names()))
    }

    /// The spec for an app whose source is in `source`: an app source's own `params.star`
    /// replaces the spec's params (as in Clace). Blocking: reads the source folder.
    pub fn lookup_for(&self, name: Option<&str>, source: Option<&Path>) -> Result<SpecRef, SpecError> {
        let spec = self.lookup(name)?;
        let Some(dir) = source else { return Ok(spec) };
        let file = dir.join(spec_star::PARAMS_STAR);
        match std::fs::read_to_string(&file) {
            Ok(text) => spec_star::with_source_params(&spec, &text, &dir.display().to_string())
                .map(Arc::new)
                .map_err(|e| SpecError::Folder(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(spec),
            Err(e) => Err(SpecError::Folder(format!("cannot read {}: {e}", file.display()))),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &SpecRef> {
        self.specs.values()
    }

    fn names(&self) -> String {
        self.specs.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A spec folder named by its path (a Clace-format folder or a `spec.toml` one); the spec is
/// named by the path, so the app's record finds it again.
fn load_path(path: &Path) -> Result<Spec, SpecError> {
    let origin = path.display().to_string();
    let fail = |e: String| SpecError::Folder(format!("spec folder {origin}: {e}"));
    let files = read_folder(path).map_err(|e| fail(format!("{:#}", e.root_cause())))?;
    let mut spec = if files.contains_key("spec.toml") {
        parse(files, &origin).map_err(|e| fail(format!("{e:#}")))?
    } else if files.contains_key(spec_star::APP_STAR) {
        spec_star::load(&origin, files, &origin).map_err(|e| SpecError::Folder(e.to_string()))?
    } else {
        return Err(fail("no app.star or spec.toml in it".into()));
    };
    spec.name = origin;
    Ok(spec)
}

fn rel_name(dir: &Path, file: &Path) -> String {
    file.strip_prefix(dir).unwrap_or(file).to_string_lossy().replace('\\', "/")
}

/// Files in subfolders of an embedded spec folder, relative to the spec folder.
fn nested_files(dir: &'static Dir<'static>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack: Vec<&Dir> = dir.dirs().collect();
    while let Some(d) = stack.pop() {
        out.extend(d.files().map(|f| (rel_name(dir.path(), f.path()), f.contents().to_vec())));
        stack.extend(d.dirs());
    }
    out
}

fn read_folder(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut ctx = crate::build::context::BuildContext::new();
    ctx.add_dir(path).with_context(|| format!("cannot read spec folder {}", path.display()))?;
    Ok(ctx.files())
}

fn parse(mut files: BTreeMap<String, Vec<u8>>, origin: &str) -> anyhow::Result<Spec> {
    let toml_bytes = files.remove("spec.toml").with_context(|| format!("spec folder {origin} has no spec.toml"))?;
    let text = String::from_utf8(toml_bytes).with_context(|| format!("spec.toml in {origin} is not UTF-8"))?;
    let file: SpecFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("spec.toml in {origin}: {}", e.message()))?;
    let kind = match file.name.as_str() {
        "image" => SpecKind::Image,
        "proxy" => SpecKind::Proxy,
        _ => SpecKind::Build,
    };
    files.retain(|name, _| name != "README.md");
    Ok(Spec {
        name: file.name,
        help: file.help,
        kind,
        params: file.params,
        container: file.container,
        requires: file.requires,
        files,
        origin: origin.into(),
        warnings: Vec::new(),
        app_star: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_specs_are_all_there() {
        let c = Catalog::load(&[]).unwrap();
        for name in [
            "container",
            "image",
            "proxy",
            "python-wsgi",
            "python-asgi",
            "python-flask",
            "python-streamlit",
            "python-streamlit-poetry",
            "python-fasthtml",
            "python-gradio",
            "go",
        ] {
            let spec = c.lookup(Some(name)).unwrap_or_else(|e| panic!("{e}"));
            if spec.kind == SpecKind::Build && name != "container" {
                let cf = spec.files.get("Containerfile").unwrap_or_else(|| panic!("{name} has no Containerfile"));
                crate::build::containerfile::check(name, &String::from_utf8_lossy(cf)).unwrap();
            }
        }
    }

    #[test]
    fn user_folders_add_and_override() {
        let root = tempfile::tempdir().unwrap();
        let mine = root.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("spec.toml"), "name = \"python-flask\"\nhelp = \"my flask\"\n").unwrap();
        std::fs::write(mine.join("Containerfile"), "FROM alpine\n").unwrap();
        let c = Catalog::load(&[root.path().to_path_buf()]).unwrap();
        let flask = c.lookup(Some("python-flask")).unwrap();
        assert_eq!(flask.help, "my flask");
        assert_eq!(flask.files["Containerfile"], b"FROM alpine\n");
        assert!(flask.origin.contains("mine"));
    }
}

#[cfg(test)]
mod clace_fixture_tests {
    use super::*;

    fn clace() -> Catalog {
        Catalog::load(&[PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clace-appspecs"))]).unwrap()
    }

    /// Where berth's built-in specs differ on purpose from Clace's, per spec and param
    /// (`*` = every spec): (spec, param, why).
    const PARAM_DIFFERENCES: &[(&str, &str, &str)] = &[
        ("*", "app_name", "Clace's display name; berth has no app names, so it is only an env var"),
        ("container", "port", "Clace gives an optional INT the zero default \"0\"; both mean: from EXPOSE"),
        ("python-wsgi", "APP_MODULE", "berth declares the free param with its default app:app"),
        ("python-asgi", "APP_MODULE", "berth declares the free param with its default app:app"),
        ("python-fasthtml", "APP_MODULE", "berth declares the free param with its default app:app"),
        ("python-streamlit", "preserve_host", "berth sends the Host (Streamlit checks WebSocket Origin)"),
        ("python-streamlit-poetry", "preserve_host", "berth sends the Host (Streamlit checks WebSocket Origin)"),
        ("proxy", "response_headers", "berth ignores response header changes (warned)"),
    ];

    fn differs(spec: &str, param: &str) -> bool {
        PARAM_DIFFERENCES.iter().any(|(s, p, _)| (*s == "*" || *s == spec) && *p == param)
    }

    fn port_of(spec: &Spec) -> Option<u16> {
        let exposed = spec
            .files
            .get("Containerfile")
            .and_then(|cf| crate::build::containerfile::exposed_port(&String::from_utf8_lossy(cf)));
        spec.container_port(&BTreeMap::new(), exposed)
    }

    #[test]
    fn clace_spec_repo_matches_the_built_in_specs() {
        let (c, b) = (clace(), Catalog::load(&[]).unwrap());
        let mut compared = Vec::new();
        for spec in c.all() {
            let Ok(built_in) = b.lookup(Some(&spec.name)) else { continue };
            let name = spec.name.as_str();
            compared.push(name.to_string());
            assert!(spec.origin.contains("clace-appspecs"), "{name} comes from the folder");
            assert_eq!(spec.kind, built_in.kind, "{name}");
            for p in &spec.params {
                if differs(name, &p.name) && built_in.params.iter().all(|q| q.name != p.name) {
                    continue;
                }
                let q = built_in.params.iter().find(|q| q.name == p.name);
                let q = q.unwrap_or_else(|| panic!("{name}: param {} is not built in", p.name));
                if differs(name, &p.name) {
                    continue;
                }
                assert_eq!((p.kind, p.required, &p.default), (q.kind, q.required, &q.default), "{name}.{}", p.name);
            }
            for q in &built_in.params {
                assert!(
                    differs(name, &q.name) || spec.params.iter().any(|p| p.name == q.name),
                    "{name}: built-in param {} missing from the Clace spec",
                    q.name
                );
            }
            if spec.kind != SpecKind::Proxy {
                assert_eq!(port_of(spec), port_of(&built_in), "{name} port");
                assert_eq!(spec.container.health_url, built_in.container.health_url, "{name} health");
                // python-wsgi: berth lets gunicorn split the path (SCRIPT_NAME); Clace strips it.
                if name != "python-wsgi" {
                    assert_eq!(spec.container.strip_app, built_in.container.strip_app, "{name} strip_app");
                }
            }
            let cf = spec.files.get("Containerfile").map(|f| String::from_utf8_lossy(f).into_owned());
            assert_eq!(cf.is_some(), built_in.files.contains_key("Containerfile"), "{name} Containerfile");
        }
        compared.sort();
        let expected = [
            "container",
            "go",
            "image",
            "proxy",
            "python-asgi",
            "python-fasthtml",
            "python-flask",
            "python-gradio",
            "python-streamlit",
            "python-streamlit-poetry",
            "python-wsgi",
        ];
        assert_eq!(compared, expected);
        // What berth cannot serve is named, not dropped.
        for name in ["static", "static_single", "image-cmd"] {
            let err = c.lookup(Some(name)).unwrap_err().to_string();
            assert!(err.starts_with(&format!("spec {name} is not supported by berth")), "{err}");
        }
        assert_eq!(c.lookup(Some("python-streamlit")).unwrap().warnings, ["container.config volumes ignored"]);
        assert!(c.lookup(Some("python-nicegui")).is_ok());
        assert!(c.lookup(Some("python-wsgi")).unwrap().container.strip_app);
    }

    #[test]
    fn a_spec_folder_by_path() {
        let c = Catalog::load(&[]).unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clace-appspecs/python-flask");
        let spec = c.lookup(Some(dir)).unwrap();
        assert_eq!(spec.name, dir, "named by its path, so the app's record finds it again");
        assert_eq!(spec.kind, SpecKind::Build);
        assert!(spec.files.contains_key("Containerfile") && !spec.files.contains_key("app.star"));
        assert!(Arc::ptr_eq(&spec, &c.lookup(Some(dir)).unwrap()), "read once, then kept");
        let err = c.lookup(Some("/nonexistent/spec")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/spec") && err.lines().count() == 1, "{err}");
    }
}
