//! Request path safety: the path a request is routed by and forwarded with. Percent-encoded
//! unreserved characters (`%41`, `%2E`, `%7E`, ...) are decoded (RFC 3986 6.2.2.2, the same
//! resource), other escapes are kept with upper-case hex. A path with a `.` or `..` segment,
//! written plainly, percent-encoded (`%2e%2e`), or behind an encoded slash or backslash
//! (`..%2f`, `%2e%2e%5c`), is refused: such a path could leave its app's base path at the
//! upstream. Pure logic.

use std::borrow::Cow;

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid request path: '%' must be followed by two hex digits")]
    BadEscape,
    #[error("invalid request path: '.' and '..' segments are not allowed (also not percent-encoded or behind an encoded slash)")]
    DotSegment,
}

/// The normalized form of a request path (without the query), or why it is refused. A path
/// without `%` that is already normal is borrowed, not copied (the common case).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.contains('%') {
        return if has_plain_dot_segment(path) { Err(PathError::DotSegment) } else { Ok(Cow::Borrowed(path)) };
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Request paths are ASCII (hyper refuses other bytes); copy any run of text.
            let next = path[i..].find('%').map_or(path.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
        let value = match (hex_value(hex[0]), hex_value(hex[1])) {
            (Some(h), Some(l)) => h * 16 + l,
            _ => return Err(PathError::BadEscape),
        };
        if is_unreserved(value) {
            out.push(value as char);
        } else {
            out.push('%');
            out.push(hex[0].to_ascii_uppercase() as char);
            out.push(hex[1].to_ascii_uppercase() as char);
        }
        i += 3;
    }
    if has_dot_segment(&out) {
        return Err(PathError::DotSegment);
    }
    Ok(Cow::Owned(out))
}

/// [`has_dot_segment`] for a path without `%`: nothing to decode, no allocation.
fn has_plain_dot_segment(path: &str) -> bool {
    path.split(['/', '\\']).any(|piece| piece == "." || piece == "..")
}

/// True when any segment, once fully percent-decoded and split at `/` and `\`, is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        decoded.split(|b| *b == b'/' || *b == b'\\').any(|piece| piece == b"." || piece == b"..")
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_unreserved_keeps_reserved() {
        assert_eq!(normalize("/app/x").unwrap(), "/app/x");
        assert_eq!(normalize("/%61pp/%7euser").unwrap(), "/app/~user");
        assert_eq!(normalize("/app/a%2fb%3f").unwrap(), "/app/a%2Fb%3F");
        assert_eq!(normalize("/app/%C3%BC").unwrap(), "/app/%C3%BC");
        assert_eq!(normalize("/app/..x/x..").unwrap(), "/app/..x/x..");
        assert_eq!(normalize("/").unwrap(), "/");
    }

    #[test]
    fn refuses_dot_segments_in_every_spelling() {
        for p in [
            "/app/../other",
            "/app/%2e%2e/other",
            "/app/%2E./other",
            "/app/.%2e/other",
            "/app/..%2fother",
            "/app/..%2Fother",
            "/app/x%2f..%2f..%2fother",
            "/app/%2e%2e%5cother",
            "/app/./x",
            "/app/%2e",
            "/app/..",
        ] {
            assert_eq!(normalize(p), Err(PathError::DotSegment), "{p}");
        }
    }

    #[test]
    fn refuses_broken_escapes() {
        for p in ["/a%", "/a%2", "/a%zz", "/a%2g"] {
            assert_eq!(normalize(p), Err(PathError::BadEscape), "{p}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The path an upstream that decodes everything (slashes and backslashes included)
        /// and resolves dot-segments would end up at.
        fn resolved_by_a_lenient_upstream(path: &str) -> String {
            let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy().replace('\\', "/");
            let mut out: Vec<&str> = Vec::new();
            for segment in decoded.split('/') {
                match segment {
                    "." => {}
                    ".." => {
                        out.pop();
                    }
                    s => out.push(s),
                }
            }
            out.join("/")
        }

        fn tricky_path() -> impl Strategy<Value = String> {
            let piece = proptest::sample::select(
                &["/", "app", "x", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%41", "%", "%g", "~", "%C3%BC"][..],
            );
            proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/app/{}", v.concat()))
        }

        proptest! {
            #[test]
            fn never_panics(path in "\\PC{0,60}") {
                let _ = normalize(&path);
            }

            #[test]
            fn normalized_paths_stay_normal(path in tricky_path()) {
                if let Ok(once) = normalize(&path) {
                    prop_assert_eq!(normalize(&once), Ok(once.clone()));
                }
            }

            /// A request below `/app/` that is accepted stays below `/app/` however the
            /// upstream decodes it.
            #[test]
            fn accepted_paths_cannot_leave_the_app(path in tricky_path()) {
                if let Ok(normalized) = normalize(&path) {
                    prop_assert!(normalized.starts_with("/app/"));
                    let resolved = resolved_by_a_lenient_upstream(&normalized);
                    prop_assert!(resolved.starts_with("/app/"), "{} resolves to {}", path, resolved);
                }
            }
        }
    }
}
