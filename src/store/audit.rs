//! The audit log's table (`audit_events`, migration 0004): recording admin changes, listing
//! them (newest last) and pruning those older than the retention.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::Store;

/// How an admin change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    Ok,
    Error,
}

impl AuditResult {
    fn as_str(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Error => "error",
        }
    }
}

/// One recorded admin change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix time in seconds.
    pub at: i64,
    pub user: String,
    pub command: String,
    /// The target app path as given; empty when the command has none.
    pub app: String,
    pub result: AuditResult,
    /// The error message; empty when ok.
    pub message: String,
}

impl Store {
    pub async fn insert_audit(&self, e: &AuditEvent) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO audit_events (at, user, command, app, result, message) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(e.at)
            .bind(&e.user)
            .bind(&e.command)
            .bind(&e.app)
            .bind(e.result.as_str())
            .bind(&e.message)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The events at or after `since` (unix seconds), oldest first.
    pub async fn audit_since(&self, since: i64) -> anyhow::Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, user, command, app, result, message FROM audit_events WHERE at >= ? ORDER BY at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEvent {
                at: r.get("at"),
                user: r.get("user"),
                command: r.get("command"),
                app: r.get("app"),
                result: if r.get::<String, _>("result") == "ok" { AuditResult::Ok } else { AuditResult::Error },
                message: r.get("message"),
            })
            .collect())
    }

    /// Deletes the events before `before` (unix seconds); returns how many.
    pub async fn prune_audit(&self, before: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query("DELETE FROM audit_events WHERE at < ?").bind(before).execute(&self.pool).await?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: i64, app: &str, result: AuditResult) -> AuditEvent {
        AuditEvent {
            at,
            user: "alice".into(),
            command: "app create".into(),
            app: app.into(),
            result,
            message: if result == AuditResult::Ok { String::new() } else { "boom".into() },
        }
    }

    #[tokio::test]
    async fn insert_list_since_and_prune() {
        let store = Store::in_memory().await.unwrap();
        let day = 86_400;
        let now = 1_000 * day;
        store.insert_audit(&event(now - 100 * day, "/old", AuditResult::Ok)).await.unwrap();
        store.insert_audit(&event(now - day, "/recent", AuditResult::Error)).await.unwrap();
        store.insert_audit(&event(now, "/now", AuditResult::Ok)).await.unwrap();
        let all = store.audit_since(0).await.unwrap();
        assert_eq!(all.iter().map(|e| e.app.as_str()).collect::<Vec<_>>(), ["/old", "/recent", "/now"]);
        assert_eq!(all[1], event(now - day, "/recent", AuditResult::Error));
        assert_eq!(store.audit_since(now - day).await.unwrap().len(), 2);
        // A 90-day retention removes only what is older than 90 days.
        assert_eq!(store.prune_audit(now - 90 * day).await.unwrap(), 1);
        let kept = store.audit_since(0).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.app.as_str()).collect::<Vec<_>>(), ["/recent", "/now"]);
    }
}
