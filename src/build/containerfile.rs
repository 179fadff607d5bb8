//! Reading a Containerfile/Dockerfile the way berth needs it: a syntax check that the
//! classic builder would accept, and the port from the last `EXPOSE`. Pure logic.

const INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// Logical lines (continuations joined, comments and blanks dropped) with their first line number.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if current.is_empty() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            start = i + 1;
        } else if line.starts_with('#') {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(line);
            out.push((start, std::mem::take(&mut current)));
        }
    }
    if !current.trim().is_empty() {
        out.push((start, current));
    }
    out
}

/// Checks that every instruction is known and that the file has a FROM. Heredoc `RUN`s are
/// checked as the exec-form `RUN`s they are built as (see `build::heredoc`).
pub fn check(name: &str, text: &str) -> Result<(), String> {
    let text = super::heredoc::rewrite(text).map_err(|e| format!("{name} does not parse: {e}"))?;
    let lines = logical_lines(&text);
    let mut saw_from = false;
    for (n, line) in &lines {
        let word = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        if !INSTRUCTIONS.contains(&word.as_str()) {
            return Err(format!("{name} does not parse: line {n}: unknown instruction {word}"));
        }
        saw_from |= word == "FROM";
    }
    if !saw_from {
        return Err(format!("{name} does not parse: no FROM instruction"));
    }
    Ok(())
}

/// The port of the last `EXPOSE` whose first token is a number (`8080` or `8080/tcp`).
pub fn exposed_port(text: &str) -> Option<u16> {
    let rewritten = super::heredoc::rewrite(text);
    logical_lines(rewritten.as_deref().unwrap_or(text))
        .iter()
        .filter_map(|(_, line)| {
            let mut words = line.split_whitespace();
            let word = words.next()?;
            if !word.eq_ignore_ascii_case("EXPOSE") {
                return None;
            }
            words.next()?.split('/').next()?.parse::<u16>().ok()
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose() {
        assert_eq!(exposed_port("FROM x\nEXPOSE 80\nEXPOSE 8080/tcp 9090\n"), Some(8080));
        assert_eq!(exposed_port("FROM x\nEXPOSE $PORT\n"), None);
        assert_eq!(exposed_port("FROM x\n"), None);
    }

    #[test]
    fn syntax() {
        assert!(check("Containerfile", "# c\nARG V=1\nFROM python:${V}\nRUN echo a \\\n  && echo b\nCMD x\n").is_ok());
        let err = check("Containerfile", "FROM x\nHELLO world\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("HELLO"), "{err}");
        assert!(check("Dockerfile", "RUN x\n").unwrap_err().contains("no FROM"));
        assert!(
            check("Dockerfile", "FROM x\nRUN cat <<EOF > f\nHELLO\nEOF\n").is_ok(),
            "heredoc body lines are not instructions"
        );
        let err = check("Dockerfile", "FROM x\nRUN cat <<EOF > f\nhi\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("not terminated"), "{err}");
        assert!(check("Dockerfile", "FROM x\nCOPY <<EOF /f\nhi\nEOF\n").unwrap_err().contains("COPY"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A Containerfile as berth's specs write them: ARGs, a FROM, instructions in any case,
        /// comments, blank lines and continuations, EXPOSE lines.
        fn containerfile() -> impl Strategy<Value = (String, Option<u16>)> {
            let arg = ("[A-Z_]{1,8}", "[a-z0-9.]{0,6}").prop_map(|(k, v)| format!("ARG {k}={v}"));
            let filler = proptest::sample::select(
                &["# a comment", "", "RUN echo a \\\n  && echo b", "copy . /app", "WorkDir /app", "ENV A=1"][..],
            )
            .prop_map(String::from);
            let expose = (any::<u16>(), any::<bool>(), any::<bool>()).prop_map(|(port, tcp, lower)| {
                let word = if lower { "expose" } else { "EXPOSE" };
                (format!("{word} {port}{}", if tcp { "/tcp" } else { "" }), port)
            });
            (
                proptest::collection::vec(arg, 0..3),
                proptest::collection::vec(
                    prop_oneof![filler.prop_map(|f| (f, None)), expose.prop_map(|(e, p)| (e, Some(p)))],
                    0..6,
                ),
            )
                .prop_map(|(args, body)| {
                    let mut lines = args;
                    lines.push("FROM python:${V}-slim".into());
                    let mut last_port = None;
                    for (line, port) in body {
                        last_port = port.or(last_port);
                        lines.push(line);
                    }
                    lines.push("CMD [\"python\", \"app.py\"]".into());
                    (lines.join("\n"), last_port)
                })
        }

        proptest! {
            #[test]
            fn never_panics(text in "\\PC{0,300}") {
                let _ = check("Containerfile", &text);
                let _ = exposed_port(&text);
            }

            #[test]
            fn generated_files_check_and_expose_their_port((text, port) in containerfile()) {
                prop_assert_eq!(check("Containerfile", &text), Ok(()));
                prop_assert_eq!(exposed_port(&text), port);
            }
        }
    }
}
