//! `.dockerignore` rules: patterns relative to the context root, `*`/`?` within a segment,
//! `**` across segments, `!` re-includes, the last matching rule wins, and a rule that
//! matches a folder applies to everything below it. Pure logic.

use crate::app_path::PathGlob;

#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    /// Each rule compiled once, and whether it re-includes (`!`).
    rules: Vec<(PathGlob, bool)>,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> IgnoreRules {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (negate, pat) = match l.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, l),
                };
                let pat = clean(pat);
                if pat.is_empty() {
                    return None;
                }
                match PathGlob::new(&pat) {
                    Ok(glob) => Some((glob, negate)),
                    Err(e) => {
                        tracing::warn!(".dockerignore rule {l:?} skipped: {e}");
                        None
                    }
                }
            })
            .collect();
        IgnoreRules { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub fn is_ignored(&self, path: &str) -> bool {
        let mut ignored = false;
        for (pat, negate) in &self.rules {
            if matches(pat, path) {
                ignored = !negate;
            }
        }
        ignored
    }
}

fn clean(pat: &str) -> String {
    let parts: Vec<&str> = pat.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    parts.join("/")
}

/// The pattern matches the path itself or one of its parent folders.
fn matches(pat: &PathGlob, path: &str) -> bool {
    let mut prefix_end = 0;
    loop {
        let next = path[prefix_end..].find('/').map(|i| prefix_end + i);
        let candidate = match next {
            Some(i) => &path[..i],
            None => path,
        };
        if pat.matches(candidate) {
            return true;
        }
        match next {
            Some(i) => prefix_end = i + 1,
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let r =
            IgnoreRules::parse("# comment\n.git\n*.pyc\n**/__pycache__\nnode_modules/\ndata/*.csv\n!data/keep.csv\n");
        assert!(r.is_ignored(".git/config"));
        assert!(r.is_ignored("x.pyc"));
        assert!(!r.is_ignored("sub/x.pyc"), "*.pyc matches only at the root, as in Docker");
        assert!(r.is_ignored("a/b/__pycache__/m.pyc"));
        assert!(r.is_ignored("node_modules/p/index.js"));
        assert!(r.is_ignored("data/big.csv"));
        assert!(!r.is_ignored("data/keep.csv"));
        assert!(!r.is_ignored("app.py"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn relative_path() -> impl Strategy<Value = String> {
            proptest::collection::vec("[a-c.]{1,3}", 1..4).prop_map(|v| v.join("/"))
        }

        fn rule() -> impl Strategy<Value = String> {
            let segment = proptest::sample::select(&["a", "b", "c", "*", "**", "?", "a*", "*.c", ".", ""][..]);
            (any::<bool>(), proptest::collection::vec(segment, 1..4))
                .prop_map(|(negate, segs)| format!("{}{}", if negate { "!" } else { "" }, segs.join("/")))
        }

        proptest! {
            #[test]
            fn parse_and_match_never_panic(text in "\\PC{0,200}", path in "\\PC{0,40}") {
                let rules = IgnoreRules::parse(&text);
                let _ = rules.is_ignored(&path);
            }

            /// Matching is stable: the same answer on a second parse, and without re-includes
            /// an ignored folder ignores everything below it.
            #[test]
            fn matching_is_stable(rules in proptest::collection::vec(rule(), 0..5), path in relative_path(), child in "[a-c]{1,3}") {
                let text = rules.join("\n");
                let (first, second) = (IgnoreRules::parse(&text), IgnoreRules::parse(&text));
                prop_assert_eq!(first.is_ignored(&path), second.is_ignored(&path));
                if !text.contains('!') && first.is_ignored(&path) {
                    let below = format!("{path}/{child}");
                    prop_assert!(first.is_ignored(&below), "{:?} ignores {} but not {}", text, path, below);
                }
            }
        }
    }
}
