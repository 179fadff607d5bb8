//! Build contexts: the spec's files, then the app's source over them (source files win),
//! filtered by `.dockerignore`, hashed by content, and packed as the tar the engine builds
//! from. No engine calls here.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::dockerignore::IgnoreRules;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    entries: BTreeMap<String, Entry>,
}

impl BuildContext {
    pub fn new() -> BuildContext {
        BuildContext::default()
    }

    pub fn add_file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.entries.insert(path.trim_start_matches('/').to_string(), Entry::File { data: data.into(), mode });
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path)? {
            Entry::File { data, .. } => Some(data),
            Entry::Symlink(_) => None,
        }
    }

    /// The regular files, by path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File { data, .. } => Some((p.clone(), data.clone())),
                Entry::Symlink(_) => None,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every file below `dir` (not `.git`), replacing files of the same path.
    pub fn add_dir(&mut self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(current) = stack.pop() {
            for entry in std::fs::read_dir(&current)? {
                let entry = entry?;
                let path = entry.path();
                let rel = path.strip_prefix(dir).expect("below dir").to_string_lossy().replace('\\', "/");
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    if rel != ".git" {
                        stack.push(path);
                    }
                } else if kind.is_symlink() {
                    let target = std::fs::read_link(&path)?.to_string_lossy().into_owned();
                    self.entries.insert(rel, Entry::Symlink(target));
                } else if kind.is_file() {
                    let mode = entry.metadata()?.permissions().mode() & 0o777;
                    self.entries.insert(rel, Entry::File { data: std::fs::read(&path)?, mode });
                }
            }
        }
        Ok(())
    }

    /// Rewrites the heredoc `RUN`s of the Containerfile `containerfile` into the exec form the
    /// classic builder runs (see `build::heredoc`); other files are untouched.
    pub fn rewrite_heredocs(&mut self, containerfile: &str) -> Result<(), String> {
        let Some(Entry::File { data, mode }) = self.entries.get(containerfile) else { return Ok(()) };
        let text = String::from_utf8_lossy(data);
        let rewritten = super::heredoc::rewrite(&text).map_err(|e| format!("{containerfile} does not parse: {e}"))?;
        if rewritten != text {
            let mode = *mode;
            self.add_file(containerfile, rewritten, mode);
        }
        Ok(())
    }

    /// Drops what `.dockerignore` excludes; the Containerfile and `.dockerignore` always stay,
    /// as with Docker.
    pub fn apply_dockerignore(&mut self, containerfile: &str) {
        let Some(rules) = self.file(".dockerignore").map(|d| IgnoreRules::parse(&String::from_utf8_lossy(d))) else {
            return;
        };
        self.entries.retain(|path, _| path == containerfile || path == ".dockerignore" || !rules.is_ignored(path));
    }

    /// SHA-256 over every entry (path, content hash, mode) and the `extra` inputs (spec name,
    /// Containerfile name, build args), in a fixed order.
    pub fn content_hash(&self, extra: &[(&str, &str)]) -> String {
        let mut h = Sha256::new();
        for (path, entry) in &self.entries {
            h.update(path.as_bytes());
            h.update([0]);
            match entry {
                Entry::File { data, mode } => {
                    h.update(Sha256::digest(data));
                    h.update(mode.to_le_bytes());
                }
                Entry::Symlink(target) => {
                    h.update(b"->");
                    h.update(target.as_bytes());
                }
            }
            h.update([0]);
        }
        let mut extra = extra.to_vec();
        extra.sort();
        for (k, v) in extra {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    /// The context as an uncompressed tar, as the engine's build endpoint takes it.
    pub fn tar(&self) -> io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::with_capacity(self.size_hint()));
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            match entry {
                Entry::File { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())?;
                }
                Entry::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        builder.into_inner()
    }

    fn size_hint(&self) -> usize {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { data, .. } => data.len() + 1024,
                Entry::Symlink(_) => 1024,
            })
            .sum::<usize>()
            + 2048
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_overrides_spec_and_ignore_applies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "flask\n").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "*.log\n").unwrap();
        std::fs::write(dir.path().join("debug.log"), "x").unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "x").unwrap();
        let mut ctx = BuildContext::new();
        ctx.add_file("requirements.txt", "", 0o644);
        ctx.add_file("Containerfile", "FROM x\n", 0o644);
        ctx.add_dir(dir.path()).unwrap();
        ctx.apply_dockerignore("Containerfile");
        assert_eq!(ctx.file("requirements.txt").unwrap(), b"flask\n");
        assert!(!ctx.contains("debug.log"));
        assert!(!ctx.contains(".git/HEAD"));
        let tar = ctx.tar().unwrap();
        let names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec![".dockerignore", "Containerfile", "requirements.txt"]);
    }

    #[test]
    fn hash_changes_with_content_and_args_only() {
        let mut a = BuildContext::new();
        a.add_file("app.py", "print(1)", 0o644);
        let h1 = a.content_hash(&[("spec", "python-wsgi")]);
        assert_eq!(h1, a.clone().content_hash(&[("spec", "python-wsgi")]));
        assert_ne!(h1, a.content_hash(&[("spec", "python-asgi")]));
        a.add_file("app.py", "print(2)", 0o644);
        assert_ne!(h1, a.content_hash(&[("spec", "python-wsgi")]));
    }

    #[test]
    fn ten_thousand_files_tar_quickly() {
        let dir = tempfile::tempdir().unwrap();
        for d in 0..100 {
            let sub = dir.path().join(format!("d{d}"));
            std::fs::create_dir(&sub).unwrap();
            for f in 0..100 {
                std::fs::write(sub.join(format!("f{f}.txt")), format!("file {d}/{f}")).unwrap();
            }
        }
        let started = std::time::Instant::now();
        let mut ctx = BuildContext::new();
        ctx.add_dir(dir.path()).unwrap();
        let _hash = ctx.content_hash(&[]);
        let tar = ctx.tar().unwrap();
        let took = started.elapsed();
        assert_eq!(ctx.len(), 10_000);
        assert!(tar.len() > 10_000 * 512);
        // Debug builds are slower than release; the 1 s target is checked in bench/build.sh.
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    }
}
