//! Loading specs: the folders embedded from the top-level `specs/` at build time, then the
//! folders listed in berth.toml (`spec_dirs`), which add specs or replace built-in ones of the
//! same name. Each spec folder holds `spec.toml` and the files copied into build contexts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use include_dir::{include_dir, Dir};
use serde::Deserialize;

use super::{ParamDef, Spec, SpecContainer, SpecError, SpecKind, SpecRef};

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
}

impl Catalog {
    /// The built-in specs, overlaid with every spec folder found in `extra_dirs` (each entry is
    /// a folder of spec folders).
    pub fn load(extra_dirs: &[PathBuf]) -> anyhow::Result<Catalog> {
        let mut specs = BTreeMap::new();
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
                if !path.join("spec.toml").exists() {
                    continue;
                }
                let spec = parse(read_folder(&path)?, &path.display().to_string())?;
                specs.insert(spec.name.clone(), Arc::new(spec));
            }
        }
        Ok(Catalog { specs })
    }

    pub fn lookup(&self, name: Option<&str>) -> Result<SpecRef, SpecError> {
        let name = name.ok_or_else(|| SpecError::Missing(self.names()))?;
        self.specs.get(name).cloned().ok_or_else(|| SpecError::Unknown(name.into(), self.names()))
    }

    pub fn all(&self) -> impl Iterator<Item = &SpecRef> {
        self.specs.values()
    }

    fn names(&self) -> String {
        self.specs.keys().cloned().collect::<Vec<_>>().join(", ")
    }
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
