//! Output formats for lists: table (default), json, jsonl and csv.

use clap::ValueEnum;

use crate::api::{AppInfo, VersionInfo};

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Jsonl,
    Csv,
}

pub fn apps(format: Format, apps: &[AppInfo]) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string_pretty(apps)?;
            out.push('\n');
        }
        Format::Jsonl => {
            for a in apps {
                out.push_str(&serde_json::to_string(a)?);
                out.push('\n');
            }
        }
        Format::Csv => {
            out.push_str("id,state,spec,app_path,source_url\n");
            for a in apps {
                out.push_str(&format!(
                    "{},{},{},{},{}\n",
                    a.id,
                    a.state,
                    a.spec,
                    csv_field(&a.app_path),
                    csv_field(&a.source_url)
                ));
            }
        }
        Format::Table => {
            out.push_str(&format!("{:<30} {:<9} {:<8} {:<40} {}\n", "ID", "STATE", "SPEC", "APP PATH", "SOURCE"));
            for a in apps {
                out.push_str(&format!(
                    "{:<30} {:<9} {:<8} {:<40} {}\n",
                    a.id, a.state, a.spec, a.app_path, a.source_url
                ));
            }
        }
    }
    Ok(out)
}

pub fn versions(format: Format, list: &[VersionInfo]) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        Format::Json => out = serde_json::to_string_pretty(list)? + "\n",
        Format::Jsonl => {
            for v in list {
                out.push_str(&serde_json::to_string(v)?);
                out.push('\n');
            }
        }
        Format::Csv => {
            out.push_str("prod,stage,version,created_at,commit,reason\n");
            for v in list {
                let commit = v.git_commit.as_deref().unwrap_or("");
                out.push_str(&format!(
                    "{},{},{},{},{commit},{}\n",
                    v.prod,
                    v.stage,
                    v.version,
                    v.created_at,
                    csv_field(&v.reason)
                ));
            }
        }
        Format::Table => {
            out.push_str(&format!("{:<7} {:>7} {:<8} {:<14} {}\n", "ACTIVE", "VERSION", "STAGE", "COMMIT", "REASON"));
            for v in list {
                let active = if v.prod { "=====>" } else { "" };
                let stage = if v.stage { "(stage)" } else { "" };
                let commit: String = v.git_commit.as_deref().unwrap_or("-").chars().take(12).collect();
                out.push_str(&format!("{active:<7} {:>7} {stage:<8} {commit:<14} {}\n", v.version, v.reason));
            }
        }
    }
    Ok(out)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_when_needed() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
