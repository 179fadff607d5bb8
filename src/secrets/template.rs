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
        let end = after.find("}}").ok_or_else(|| SecretError::Syntax("missing }}".into()))?;
        parts.push(Part::Secret(parse_action(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
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
    }
}
