//! Parsing `{{secret ...}}` templates. Pure logic.

use super::SecretError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// `None`: the default provider.
    pub provider: Option<String>,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Secret(SecretRef),
}

pub fn contains_template(text: &str) -> bool {
    text.len() >= 4 && text.contains("{{") && text.contains("}}")
}

/// Splits text into literal parts and secret references.
pub fn parse(text: &str) -> Result<Vec<Part>, SecretError> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = closing_braces(after).ok_or_else(|| SecretError::Syntax("missing }}".into()))?;
        parts.push(Part::Secret(parse_action(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// Where the action's `}}` is: the first one outside a quoted argument.
fn closing_braces(action: &str) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in action.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '}' if !in_quote && action[i..].starts_with("}}") => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_action(action: &str) -> Result<SecretRef, SecretError> {
    let words = words(action)?;
    let (func, args) = words.split_first().ok_or_else(|| SecretError::Syntax("empty {{ }}".into()))?;
    let syntax = |m: &str| SecretError::Syntax(format!("{{{{{action}}}}}: {m}"));
    match (func.as_str(), args.len()) {
        ("secret", 0) | ("secret_from", 0..=1) => Err(syntax("expected a provider and a key in quotes")),
        ("secret", 1) => Ok(SecretRef { provider: None, keys: args.to_vec() }),
        ("secret" | "secret_from", _) => {
            let provider = match args[0].as_str() {
                "" | "default" => None,
                p => Some(p.to_string()),
            };
            Ok(SecretRef { provider, keys: args[1..].to_vec() })
        }
        _ => Err(syntax("only secret and secret_from are supported")),
    }
}

/// The function name, then double-quoted arguments.
fn words(action: &str) -> Result<Vec<String>, SecretError> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => word.extend(chars.next()),
                    Some(ch) => word.push(ch),
                    None => return Err(SecretError::Syntax(format!("unterminated quote in {{{{{action}}}}}"))),
                }
            }
            out.push(word);
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '"' {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            if !out.is_empty() {
                return Err(SecretError::Syntax(format!("arguments must be quoted in {{{{{action}}}}}")));
            }
            out.push(word);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let r = |p: Option<&str>, k: &[&str]| {
            Part::Secret(SecretRef { provider: p.map(String::from), keys: k.iter().map(|s| s.to_string()).collect() })
        };
        assert_eq!(parse("{{secret \"vault_prod\" \"MY_KEY\"}}").unwrap(), vec![r(Some("vault_prod"), &["MY_KEY"])]);
        assert_eq!(parse("{{ secret \"K\" }}").unwrap(), vec![r(None, &["K"])]);
        assert_eq!(
            parse("a-{{secret_from \"default\" \"c1\" \"c2\"}}-b").unwrap(),
            vec![Part::Text("a-".into()), r(None, &["c1", "c2"]), Part::Text("-b".into())]
        );
        assert!(parse("{{secret}}").is_err());
        assert!(parse("{{env \"X\"}}").is_err());
        assert!(parse("{{secret \"a\"").is_err());
        assert!(parse("{{secret a b}}").is_err());
        assert!(!contains_template("plain {{"));
        assert_eq!(parse("{{secret \"a}}b\"}}!").unwrap(), vec![r(None, &["a}}b"]), Part::Text("!".into())]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Writes parts back as template text (the `secret_from` form, keys quoted).
        fn render(parts: &[Part]) -> String {
            let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
            parts
                .iter()
                .map(|part| match part {
                    Part::Text(t) => t.clone(),
                    Part::Secret(r) => {
                        let provider = r.provider.as_deref().unwrap_or("default");
                        let keys: Vec<String> = r.keys.iter().map(|k| quote(k)).collect();
                        format!("{{{{secret_from {} {}}}}}", quote(provider), keys.join(" "))
                    }
                })
                .collect()
        }

        fn part() -> impl Strategy<Value = Part> {
            prop_oneof![
                // Literal text cannot hold a template opening, nor end in `{` (it would join the next `{{`).
                "[^{}]{1,12}".prop_map(Part::Text),
                (
                    proptest::option::of(
                        "[a-z][a-z0-9_]{0,8}".prop_filter("default is no provider", |p| p != "default")
                    ),
                    proptest::collection::vec("[A-Za-z0-9_./ {}\"\\\\-]{1,10}", 1..3),
                )
                    .prop_map(|(provider, keys)| Part::Secret(SecretRef { provider, keys })),
            ]
        }

        /// Adjacent text parts are one text part once parsed.
        fn merged(parts: Vec<Part>) -> Vec<Part> {
            let mut out: Vec<Part> = Vec::new();
            for part in parts {
                match (out.last_mut(), part) {
                    (Some(Part::Text(prev)), Part::Text(t)) => prev.push_str(&t),
                    (_, part) => out.push(part),
                }
            }
            out
        }

        proptest! {
            #[test]
            fn parse_never_panics(text in "\\PC{0,80}") {
                let _ = parse(&text);
                let _ = contains_template(&text);
            }

            #[test]
            fn rendered_templates_parse_back(parts in proptest::collection::vec(part(), 0..5)) {
                let text = render(&parts);
                prop_assert_eq!(parse(&text).unwrap(), merged(parts));
            }
        }
    }
}
