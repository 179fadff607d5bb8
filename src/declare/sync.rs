//! Scheduled syncs, the pure parts: the options a sync keeps, when it is due, whether a run
//! must apply (the file's commit changed, or the run is forced) and the checks on its
//! interval. Running them is `apps::sync`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How often a sync runs when `--minutes` is not given (as Clace's `default_schedule_mins`).
pub const DEFAULT_MINUTES: f64 = 15.0;

/// What a sync applies its file with (stored as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncOptions {
    pub branch: Option<String>,
    pub params: BTreeMap<String, String>,
    pub promote: bool,
    pub approve: bool,
    pub clobber: bool,
}

/// Checks a sync interval: at least one minute, and whole minutes, unless `allow_short` (a
/// test setting of the server) allows any positive interval.
pub fn check_minutes(minutes: f64, allow_short: bool) -> Result<f64, String> {
    if !minutes.is_finite() || minutes <= 0.0 {
        return Err(format!("invalid --minutes {minutes}: it must be a positive number of minutes"));
    }
    if !allow_short && (minutes < 1.0 || minutes.fract() != 0.0) {
        return Err(format!("invalid --minutes {minutes}: it must be a whole number of minutes, 1 or more"));
    }
    Ok(minutes)
}

/// When a sync is next due, in milliseconds since the epoch: `minutes` after its last run, or
/// after it was made when it never ran.
pub fn next_due_ms(created_at_secs: i64, last_run_at_secs: Option<i64>, minutes: f64) -> i64 {
    let from = last_run_at_secs.unwrap_or(created_at_secs) * 1000;
    from + (minutes * 60_000.0).round() as i64
}

/// Whether a run applies the file: always for a forced run (`sync run`, webhook) and for files
/// not in git; for a file in git only when its branch's commit differs from the last one
/// applied.
pub fn must_apply(forced: bool, last_commit: Option<&str>, remote_commit: Option<&str>) -> bool {
    forced || remote_commit.is_none() || remote_commit != last_commit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_whole_unless_short_ones_are_allowed() {
        assert_eq!(check_minutes(15.0, false), Ok(15.0));
        assert!(check_minutes(0.5, false).unwrap_err().contains("whole number"));
        assert!(check_minutes(1.5, false).is_err());
        assert_eq!(check_minutes(0.05, true), Ok(0.05));
        assert!(check_minutes(0.0, true).is_err());
        assert!(check_minutes(-1.0, true).is_err());
        assert!(check_minutes(f64::NAN, true).is_err());
    }

    #[test]
    fn due_after_the_last_run_or_creation() {
        assert_eq!(next_due_ms(100, None, 1.0), 160_000);
        assert_eq!(next_due_ms(100, Some(200), 2.0), 320_000);
        assert_eq!(next_due_ms(100, Some(200), 0.05), 203_000);
    }

    #[test]
    fn applies_only_when_the_commit_moved_unless_forced() {
        assert!(!must_apply(false, Some("a"), Some("a")));
        assert!(must_apply(false, Some("a"), Some("b")));
        assert!(must_apply(false, None, Some("b")));
        assert!(must_apply(true, Some("a"), Some("a")));
        assert!(must_apply(false, None, None), "local files always apply (an unchanged file changes nothing)");
    }
}
