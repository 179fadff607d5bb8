//! The apply plan (pure): per declared app, create it, update it (which fields change) or
//! leave it. A three-way merge between what the file declares now, what the app has now and
//! what the file declared at the last apply: a value the file changed since the last apply is
//! staged, unless the CLI also changed it since then (kept, and reported, unless `clobber`).
//! With `clobber` the app gets exactly what the file declares. An app never applied before
//! merges against an empty declaration: values set with the CLI that the file also sets
//! differently are kept unless `clobber`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The fields of an app an apply file sets and merges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fields {
    pub params: BTreeMap<String, String>,
    pub container_options: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    pub app_config: BTreeMap<String, String>,
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
}

/// One app as declared (source resolved, spec named), also what is stored as the last applied
/// declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    pub source: String,
    pub spec: String,
    pub fields: Fields,
}

/// What the apply does to one declared app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// The fields the app's stage gets, what changes, and which CLI changes were kept.
    Update {
        target: Fields,
        changes: Vec<String>,
        kept: Vec<String>,
    },
    NoChange {
        kept: Vec<String>,
    },
}

/// Plans one app: `current` is the app's stage configuration (None: no app at this path),
/// `last` the declaration applied last (None: never applied).
pub fn plan_app(
    declared: &Declaration,
    current: Option<(&str, &str, &Fields)>,
    last: Option<&Declaration>,
    clobber: bool,
) -> Result<Action, String> {
    let Some((source, spec, current)) = current else {
        return Ok(Action::Create);
    };
    if source != declared.source {
        return Err(format!(
            "its source is {source}, the file declares {}: delete the app to change its source",
            declared.source
        ));
    }
    if spec != declared.spec {
        return Err(format!(
            "its spec is {spec}, the file declares {}: delete the app to change its spec",
            declared.spec
        ));
    }
    let empty = Fields::default();
    let base = last.map(|l| &l.fields).unwrap_or(&empty);
    let want = &declared.fields;
    let mut merge = Merge { clobber, changes: Vec::new(), kept: Vec::new() };
    let target = Fields {
        params: merge.map("param", &want.params, &base.params, &current.params),
        container_options: merge.map(
            "container option",
            &want.container_options,
            &base.container_options,
            &current.container_options,
        ),
        build_args: merge.map("container arg", &want.build_args, &base.build_args, &current.build_args),
        app_config: merge.map("app config", &want.app_config, &base.app_config, &current.app_config),
        git_branch: merge.value("git_branch", &want.git_branch, &base.git_branch, &current.git_branch),
        git_commit: merge.value("git_commit", &want.git_commit, &base.git_commit, &current.git_commit),
    };
    if target == *current {
        Ok(Action::NoChange { kept: merge.kept })
    } else {
        Ok(Action::Update { target, changes: merge.changes, kept: merge.kept })
    }
}

struct Merge {
    clobber: bool,
    changes: Vec<String>,
    kept: Vec<String>,
}

impl Merge {
    /// The merged value of one field or key: `want` (the file now), `base` (the file at the
    /// last apply), `current` (the app now).
    fn value(
        &mut self,
        what: &str,
        want: &Option<String>,
        base: &Option<String>,
        current: &Option<String>,
    ) -> Option<String> {
        let file_changed = want != base;
        let cli_changed = current != base;
        let take_file = if self.clobber { want != current } else { file_changed && want != current && !cli_changed };
        if take_file {
            self.changes.push(describe(what, current, want));
            return want.clone();
        }
        if !self.clobber && file_changed && cli_changed && want != current {
            self.kept.push(format!("{what} (changed with the CLI since the last apply; --clobber overwrites)"));
        }
        current.clone()
    }

    fn map(
        &mut self,
        what: &str,
        want: &BTreeMap<String, String>,
        base: &BTreeMap<String, String>,
        current: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let keys: std::collections::BTreeSet<&String> = want.keys().chain(base.keys()).chain(current.keys()).collect();
        let mut out = BTreeMap::new();
        for key in keys {
            let name = format!("{what} {key}");
            let merged =
                self.value(&name, &want.get(key).cloned(), &base.get(key).cloned(), &current.get(key).cloned());
            if let Some(v) = merged {
                out.insert(key.clone(), v);
            }
        }
        out
    }
}

fn describe(what: &str, from: &Option<String>, to: &Option<String>) -> String {
    match (from, to) {
        (None, Some(v)) => format!("{what} set to {v:?}"),
        (Some(_), None) => format!("{what} removed"),
        (Some(a), Some(b)) => format!("{what} {a:?} -> {b:?}"),
        (None, None) => format!("{what} unchanged"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(params: &[(&str, &str)]) -> Fields {
        Fields { params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    fn decl(params: &[(&str, &str)]) -> Declaration {
        Declaration { source: "-".into(), spec: "proxy".into(), fields: fields(params) }
    }

    #[test]
    fn missing_app_is_created() {
        assert_eq!(plan_app(&decl(&[("a", "1")]), None, None, false).unwrap(), Action::Create);
    }

    #[test]
    fn same_declaration_twice_changes_nothing() {
        let d = decl(&[("a", "1")]);
        let cur = fields(&[("a", "1")]);
        assert_eq!(
            plan_app(&d, Some(("-", "proxy", &cur)), Some(&d), false).unwrap(),
            Action::NoChange { kept: vec![] }
        );
    }

    #[test]
    fn file_change_is_staged_and_cli_change_is_kept() {
        let last = decl(&[("a", "1"), ("b", "1")]);
        // The CLI changed b since the last apply; the file changes a and b and adds c.
        let cur = fields(&[("a", "1"), ("b", "cli")]);
        let now = decl(&[("a", "2"), ("b", "2"), ("c", "3")]);
        let Action::Update { target, changes, kept } =
            plan_app(&now, Some(("-", "proxy", &cur)), Some(&last), false).unwrap()
        else {
            panic!("expected an update")
        };
        assert_eq!(target, fields(&[("a", "2"), ("b", "cli"), ("c", "3")]));
        assert_eq!(changes, vec!["param a \"1\" -> \"2\"", "param c set to \"3\""]);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].starts_with("param b"), "{kept:?}");
    }

    #[test]
    fn clobber_takes_exactly_the_file() {
        let last = decl(&[("a", "1")]);
        let cur = fields(&[("a", "cli"), ("extra", "x")]);
        let now = decl(&[("a", "1")]);
        // Without --clobber the file did not change a: the CLI's value and extra stay.
        assert_eq!(
            plan_app(&now, Some(("-", "proxy", &cur)), Some(&last), false).unwrap(),
            Action::NoChange { kept: vec![] }
        );
        let Action::Update { target, .. } = plan_app(&now, Some(("-", "proxy", &cur)), Some(&last), true).unwrap()
        else {
            panic!("expected an update")
        };
        assert_eq!(target, fields(&[("a", "1")]));
    }

    #[test]
    fn key_removed_from_the_file_is_removed_unless_the_cli_changed_it() {
        let last = decl(&[("a", "1"), ("b", "1")]);
        let cur = fields(&[("a", "1"), ("b", "cli")]);
        let now = decl(&[]);
        let Action::Update { target, .. } = plan_app(&now, Some(("-", "proxy", &cur)), Some(&last), false).unwrap()
        else {
            panic!("expected an update")
        };
        assert_eq!(target, fields(&[("b", "cli")]));
    }

    #[test]
    fn never_applied_app_keeps_cli_values_that_differ() {
        let cur = fields(&[("a", "cli"), ("other", "x")]);
        let now = decl(&[("a", "file"), ("new", "n")]);
        let Action::Update { target, kept, .. } = plan_app(&now, Some(("-", "proxy", &cur)), None, false).unwrap()
        else {
            panic!("expected an update")
        };
        assert_eq!(target, fields(&[("a", "cli"), ("new", "n"), ("other", "x")]));
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn scalars_merge_like_keys() {
        let mut last = decl(&[]);
        last.fields.git_branch = Some("main".into());
        let mut now = last.clone();
        now.fields.git_branch = Some("dev".into());
        let cur = last.fields.clone();
        let Action::Update { target, changes, .. } =
            plan_app(&now, Some(("-", "proxy", &cur)), Some(&last), false).unwrap()
        else {
            panic!("expected an update")
        };
        assert_eq!(target.git_branch.as_deref(), Some("dev"));
        assert_eq!(changes, vec!["git_branch \"main\" -> \"dev\""]);
    }

    #[test]
    fn source_or_spec_change_is_refused() {
        let d = decl(&[]);
        let cur = fields(&[]);
        let err = plan_app(&d, Some(("/src", "proxy", &cur)), None, false).unwrap_err();
        assert!(err.contains("its source is /src"), "{err}");
        let err = plan_app(&d, Some(("-", "image", &cur)), None, true).unwrap_err();
        assert!(err.contains("its spec is image"), "{err}");
    }
}
