//! Heredocs in `RUN` (`RUN cat <<EOF > /x.sh` ... `EOF`), which BuildKit understands and the
//! classic builder (Docker 20.10's default) does not. A heredoc `RUN` is rewritten into the
//! exec form `RUN ["/bin/sh", "-c", "<the command line, the heredoc lines and their
//! terminators, newlines kept>"]`, which every builder runs the same way. This keeps
//! BuildKit's semantics exactly: BuildKit also hands a `RUN` whose command is not itself a
//! heredoc to the shell with its heredocs, and does not expand variables in them, so the shell
//! alone decides what `<<EOF` (expands `$x`, honours `\$`), `<<'EOF'` (literal) and `<<-EOF`
//! (strips leading tabs) mean. The rewrite is applied to every build (the result is the same
//! on BuildKit), with the shell of the last `SHELL` instruction if there is one. Heredocs in
//! `COPY`/`ADD` are refused. Pure logic.

/// One `<<[-]WORD` marker of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    delimiter: String,
    strip_tabs: bool,
}

/// The heredoc markers of a shell command line, outside quotes: `<<EOF`, `<<-EOF`,
/// `<< EOF`, `<<'EOF'`, `<<"EOF"`; not `<<<` (a here-string).
fn markers(line: &str) -> Vec<Marker> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut quote) = (0, None::<char>);
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => i += 1,
            Some(_) => {}
            None if c == '\\' => i += 1,
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '<' && chars.get(i + 1) == Some(&'<') && chars.get(i + 2) == Some(&'<') => i += 2,
            None if c == '<' && chars.get(i + 1) == Some(&'<') => {
                let mut j = i + 2;
                let strip_tabs = chars.get(j) == Some(&'-');
                if strip_tabs {
                    j += 1;
                }
                while chars.get(j).is_some_and(|c| *c == ' ' || *c == '\t') {
                    j += 1;
                }
                let mut word = String::new();
                let mut word_quote = None;
                while let Some(&c) = chars.get(j) {
                    match word_quote {
                        Some(q) if c == q => word_quote = None,
                        Some(_) => word.push(c),
                        None if c == '\'' || c == '"' => word_quote = Some(c),
                        None if c == '\\' => {}
                        None if c.is_whitespace() || "<>|&;()".contains(c) => break,
                        None => word.push(c),
                    }
                    j += 1;
                }
                if !word.is_empty() {
                    out.push(Marker { delimiter: word, strip_tabs });
                }
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// The first word of an instruction line, upper-cased.
fn instruction(line: &str) -> String {
    line.split_whitespace().next().unwrap_or("").to_ascii_uppercase()
}

/// Rewrites every heredoc `RUN` of a Containerfile into the exec form (see the module doc).
/// Other lines are kept byte for byte. Errors name the line.
pub fn rewrite(text: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut shell: Vec<String> = vec!["/bin/sh".into(), "-c".into()];
    let mut i = 0;
    while i < lines.len() {
        let first = lines[i];
        let word = instruction(first);
        let trimmed = first.trim_start();
        if trimmed.starts_with('#') || word.is_empty() {
            out.push(first.to_string());
            i += 1;
            continue;
        }
        // The logical instruction: continuation lines joined as Docker joins them.
        let start = i;
        let mut command =
            trimmed[trimmed.find(char::is_whitespace).unwrap_or(trimmed.len())..].trim_start().to_string();
        while command.ends_with('\\') && i + 1 < lines.len() {
            command.pop();
            i += 1;
            command.push_str(lines[i]);
        }
        i += 1;
        if word == "SHELL" {
            if let Ok(new_shell) = serde_json::from_str::<Vec<String>>(command.trim()) {
                shell = new_shell;
            }
        }
        let is_exec_form = command.trim_start().starts_with('[');
        let found = if is_exec_form { Vec::new() } else { markers(&command) };
        if found.is_empty() {
            out.extend(lines[start..i].iter().map(|l| l.to_string()));
            continue;
        }
        if word != "RUN" {
            return Err(format!("line {}: heredocs in {word} are not supported by the classic builder", start + 1));
        }
        let mut script = command;
        for marker in &found {
            loop {
                let Some(line) = lines.get(i) else {
                    return Err(format!(
                        "line {}: heredoc {} is not terminated (no line {:?})",
                        start + 1,
                        marker.delimiter,
                        marker.delimiter
                    ));
                };
                i += 1;
                script.push('\n');
                script.push_str(line);
                let body = if marker.strip_tabs { line.trim_start_matches('\t') } else { line };
                if body == marker.delimiter {
                    break;
                }
            }
        }
        let mut argv = shell.clone();
        argv.push(script);
        out.push(format!("RUN {}", serde_json::to_string(&argv).expect("strings serialize")));
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clace(spec: &str) -> String {
        let path = format!("{}/tests/fixtures/clace-appspecs/{spec}/Containerfile", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    /// The argv of the one exec-form RUN made from a heredoc.
    fn heredoc_run(rewritten: &str) -> Vec<String> {
        let runs: Vec<&str> = rewritten.lines().filter(|l| l.starts_with("RUN [")).collect();
        assert_eq!(runs.len(), 1, "{rewritten}");
        serde_json::from_str(&runs[0][4..]).unwrap()
    }

    /// Runs a rewritten RUN's argv with the shell in `dir` and returns the file it wrote.
    fn run(argv: &[String], dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    #[test]
    fn clace_containerfiles_become_exec_form_runs() {
        for (spec, script) in [
            ("python-streamlit", "/streamlit_cmd.sh"),
            ("python-streamlit-poetry", "/streamlit_cmd.sh"),
            ("python-gradio", "/tmp/gradio_cmd.sh"),
            ("python-nicegui", "/fastgui_cmd.sh"),
        ] {
            let original = clace(spec);
            assert!(crate::build::containerfile::check(spec, &original).is_ok(), "{spec} is accepted");
            let rewritten = rewrite(&original).unwrap();
            let argv = heredoc_run(&rewritten);
            assert_eq!(&argv[..2], ["/bin/sh", "-c"]);
            // The shell gets the original lines from `cat <<EOF` through `EOF`, newlines kept.
            let start = original.find(&format!("cat <<EOF > {script}")).unwrap();
            let end = original[start..].find("\nEOF\n").unwrap() + start + "\nEOF".len();
            assert_eq!(argv[2], original[start..end], "{spec}");
            // Every other line is unchanged.
            let others = |t: &str| t.lines().filter(|l| !l.starts_with("RUN cat") && !l.starts_with("RUN [")).count();
            assert_eq!(others(&rewritten) + argv[2].lines().count() - 1, others(&original), "{spec}");
            assert_eq!(
                crate::build::containerfile::exposed_port(&rewritten),
                crate::build::containerfile::exposed_port(&original)
            );
        }
    }

    #[test]
    fn the_streamlit_script_is_what_the_shell_writes() {
        let dir = tempfile::tempdir().unwrap();
        let original = clace("python-streamlit").replace("/streamlit_cmd.sh", "out.sh");
        let argv = heredoc_run(&rewrite(&original).unwrap());
        run(&argv, dir.path(), &[("app_file", "WRONG"), ("CL_APP_PATH", "WRONG")]);
        let written = std::fs::read_to_string(dir.path().join("out.sh")).unwrap();
        assert_eq!(
            written,
            "run_args=\"run $app_file\"\nif [[ \"$app_file\" = \"hello\" ]]; then\n    run_args=\"hello\"\nfi\n\
             streamlit $run_args --server.address=0.0.0.0 --server.baseUrlPath=$CL_APP_PATH\n",
            "\\$ escapes are undone by the shell, nothing is expanded at build time"
        );
    }

    #[test]
    fn shell_semantics_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let text = "FROM alpine\n\
                    RUN cat <<EOF >a; cat <<'RAW' >b; cat <<-TABS >c\n\
                    v=$V w=\\$V\n\
                    EOF\n\
                    v=$V w=\\$V\n\
                    RAW\n\
                    \t\tindented $V\n\
                    \tTABS\n\
                    CMD x\n";
        let rewritten = rewrite(text).unwrap();
        assert_eq!(rewritten.lines().count(), 3, "{rewritten}");
        assert!(rewritten.ends_with("\nCMD x\n"));
        run(&heredoc_run(&rewritten), dir.path(), &[("V", "1")]);
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("a"), "v=1 w=$V\n", "unquoted: expanded, \\$ escaped");
        assert_eq!(read("b"), "v=$V w=\\$V\n", "quoted: literal");
        assert_eq!(read("c"), "indented 1\n", "<<-: leading tabs stripped");
    }

    #[test]
    fn shell_instruction_continuations_and_errors() {
        let text = "FROM alpine\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN echo a \\\n && cat << \"X\" > f\nq\"uote\\\nX\n";
        let argv = heredoc_run(&rewrite(text).unwrap());
        assert_eq!(argv, ["/bin/bash", "-o", "pipefail", "-c", "echo a  && cat << \"X\" > f\nq\"uote\\\nX"]);
        assert_eq!(rewrite("FROM a\nRUN echo '<<EOF'\n").unwrap(), "FROM a\nRUN echo '<<EOF'\n", "quoted: no heredoc");
        assert_eq!(rewrite("FROM a\nRUN cat <<<x\n").unwrap(), "FROM a\nRUN cat <<<x\n", "here-string");
        assert_eq!(
            rewrite("FROM a\nRUN [\"sh\", \"-c\", \"cat <<E\"]\n").unwrap(),
            "FROM a\nRUN [\"sh\", \"-c\", \"cat <<E\"]\n"
        );
        let err = rewrite("FROM a\nRUN cat <<EOF > f\nno end\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("not terminated"), "{err}");
        let err = rewrite("FROM a\nCOPY <<EOF /x\nhi\nEOF\n").unwrap_err();
        assert!(err.contains("COPY"), "{err}");
    }
}
