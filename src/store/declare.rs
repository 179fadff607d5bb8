//! The store's tables for declarative apps: the declaration each app was last applied with
//! (`applied_apps`), and scheduled syncs (`syncs`). Declarations and sync options are JSON the
//! caller defines; this module only keeps them.

use std::collections::HashMap;

use sqlx::Row;

use super::{AppRecord, Store};

/// A scheduled sync as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRecord {
    pub id: String,
    /// The apply file: an absolute path or a git URL.
    pub file: String,
    /// How often it runs.
    pub minutes: f64,
    /// JSON: branch, params, promote, approve, clobber.
    pub options: String,
    /// The webhook's HMAC secret.
    pub secret: String,
    pub created_at: i64,
    pub last_run_at: Option<i64>,
    pub last_commit: Option<String>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
}

/// What one run of a sync found, as stored.
pub struct SyncRun<'a> {
    pub at: i64,
    pub commit: Option<&'a str>,
    pub result: &'a str,
    pub error: Option<&'a str>,
}

impl Store {
    /// App id → the JSON declaration it was last applied with.
    pub async fn applied_declarations(&self) -> anyhow::Result<HashMap<String, String>> {
        let rows = sqlx::query("SELECT app_id, declaration FROM applied_apps").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get("app_id"), r.get("declaration"))).collect())
    }

    pub async fn set_applied(&self, app_id: &str, declaration: &str, file: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO applied_apps (app_id, declaration, file, applied_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (app_id) DO UPDATE SET declaration = excluded.declaration, file = excluded.file, \
             applied_at = excluded.applied_at",
        )
        .bind(app_id)
        .bind(declaration)
        .bind(file)
        .bind(super::now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Points stage back at `version` and removes every newer version (undoing a staged change
    /// that was part of a failed apply).
    /// Puts an app's prod and stage versions back to `before`'s and deletes the versions made
    /// since (undoing an apply that failed half-way).
    pub async fn restore_versions(&self, before: &AppRecord) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE apps SET prod_version = ?, stage_version = ?, previous_prod_version = ? WHERE id = ?")
            .bind(before.prod.number)
            .bind(before.stage.number)
            .bind(before.previous_prod_version)
            .bind(&before.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM app_versions WHERE app_id = ? AND version > ? AND version > ?")
            .bind(&before.id)
            .bind(before.prod.number)
            .bind(before.stage.number)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_sync(&self, sync: &SyncRecord) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO syncs (id, file, minutes, options, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&sync.id)
            .bind(&sync.file)
            .bind(sync.minutes)
            .bind(&sync.options)
            .bind(&sync.secret)
            .bind(sync.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_syncs(&self) -> anyhow::Result<Vec<SyncRecord>> {
        let rows = sqlx::query("SELECT * FROM syncs ORDER BY created_at, id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row_to_sync).collect())
    }

    pub async fn sync(&self, id: &str) -> anyhow::Result<Option<SyncRecord>> {
        let row = sqlx::query("SELECT * FROM syncs WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(row_to_sync))
    }

    pub async fn delete_sync(&self, id: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM syncs WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn record_sync_run(&self, id: &str, run: &SyncRun<'_>) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE syncs SET last_run_at = ?, last_commit = COALESCE(?, last_commit), last_result = ?, last_error = ? \
             WHERE id = ?",
        )
        .bind(run.at)
        .bind(run.commit)
        .bind(run.result)
        .bind(run.error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn row_to_sync(r: &sqlx::sqlite::SqliteRow) -> SyncRecord {
    SyncRecord {
        id: r.get("id"),
        file: r.get("file"),
        minutes: r.get("minutes"),
        options: r.get("options"),
        secret: r.get("secret"),
        created_at: r.get("created_at"),
        last_run_at: r.get("last_run_at"),
        last_commit: r.get("last_commit"),
        last_result: r.get("last_result"),
        last_error: r.get("last_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn applied_declaration_goes_with_its_app_and_restore_drops_newer_versions() {
        use crate::store::AppConfig;
        let store = Store::in_memory().await.unwrap();
        let rec = crate::store::tests::record("app_1");
        store.insert_app(&rec).await.unwrap();
        store.set_applied("app_1", "{\"a\":1}", "/f.star").await.unwrap();
        store.set_applied("app_1", "{\"a\":2}", "/f.star").await.unwrap();
        assert_eq!(store.applied_declarations().await.unwrap()["app_1"], "{\"a\":2}");
        assert_eq!(store.add_version("app_1", &AppConfig::default(), "apply", false).await.unwrap(), 2);
        // A dev app's change moves prod too: both go back.
        assert_eq!(store.add_version("app_1", &AppConfig::default(), "apply", true).await.unwrap(), 3);
        store.restore_versions(&rec).await.unwrap();
        let app = &store.list_apps().await.unwrap()[0];
        assert_eq!((app.prod.number, app.stage.number, app.previous_prod_version), (1, 1, 0));
        assert_eq!(store.versions("app_1").await.unwrap().len(), 1);
        assert!(store.delete_app("app_1").await.unwrap(), "an applied app can be deleted");
        assert!(store.applied_declarations().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn syncs_round_trip_and_runs_are_recorded() {
        let store = Store::in_memory().await.unwrap();
        let rec = SyncRecord {
            id: "sync_1".into(),
            file: "/x/apps.star".into(),
            minutes: 15.0,
            options: "{}".into(),
            secret: "s".into(),
            created_at: 1,
            last_run_at: None,
            last_commit: None,
            last_result: None,
            last_error: None,
        };
        store.insert_sync(&rec).await.unwrap();
        assert_eq!(store.list_syncs().await.unwrap(), vec![rec.clone()]);
        let run = SyncRun { at: 5, commit: Some("abc"), result: "applied", error: None };
        store.record_sync_run("sync_1", &run).await.unwrap();
        let run = SyncRun { at: 6, commit: None, result: "failed", error: Some("boom") };
        store.record_sync_run("sync_1", &run).await.unwrap();
        let got = store.sync("sync_1").await.unwrap().unwrap();
        assert_eq!(
            (got.last_run_at, got.last_commit.as_deref(), got.last_error.as_deref()),
            (Some(6), Some("abc"), Some("boom"))
        );
        assert!(store.delete_sync("sync_1").await.unwrap());
        assert!(store.sync("sync_1").await.unwrap().is_none());
    }
}
