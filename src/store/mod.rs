//! App metadata in SQLite (sqlx), with embedded migrations. Stores what the user asked for:
//! never runtime state such as container ids or ports.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::app_path::AppPath;

/// An app as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub id: String,
    pub path: AppPath,
    pub source_url: String,
    pub spec: String,
    pub params: BTreeMap<String, String>,
    pub app_config: BTreeMap<String, String>,
    pub created_at: i64,
    /// Requested git branch and commit (`--branch`, `--commit`).
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
    /// What was fetched: the commit (git sources) and the snapshot folder berth keeps.
    pub source_commit: Option<String>,
    pub snapshot: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// For built apps: the image name the build inputs hash to.
    pub image: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(file: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        Self::with_options(opts).await
    }

    pub async fn in_memory() -> anyhow::Result<Store> {
        Self::with_options(SqliteConnectOptions::from_str("sqlite::memory:")?).await
    }

    async fn with_options(opts: SqliteConnectOptions) -> anyhow::Result<Store> {
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn list_apps(&self) -> anyhow::Result<Vec<AppRecord>> {
        let rows = sqlx::query("SELECT id, domain, path, source_url, spec, params, app_config, created_at, git_branch, git_commit, source_commit, snapshot, build_args, image FROM apps ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AppRecord {
                    id: r.get("id"),
                    path: AppPath { domain: r.get("domain"), path: r.get("path") },
                    source_url: r.get("source_url"),
                    spec: r.get("spec"),
                    params: serde_json::from_str(r.get("params"))?,
                    app_config: serde_json::from_str(r.get("app_config"))?,
                    created_at: r.get("created_at"),
                    git_branch: r.get("git_branch"),
                    git_commit: r.get("git_commit"),
                    source_commit: r.get("source_commit"),
                    snapshot: r.get("snapshot"),
                    build_args: serde_json::from_str(r.get("build_args"))?,
                    image: r.get("image"),
                })
            })
            .collect()
    }

    pub async fn insert_app(&self, app: &AppRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO apps (id, domain, path, source_url, spec, params, app_config, created_at, \
             git_branch, git_commit, source_commit, snapshot, build_args, image) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&app.id)
        .bind(&app.path.domain)
        .bind(&app.path.path)
        .bind(&app.source_url)
        .bind(&app.spec)
        .bind(serde_json::to_string(&app.params)?)
        .bind(serde_json::to_string(&app.app_config)?)
        .bind(app.created_at)
        .bind(&app.git_branch)
        .bind(&app.git_commit)
        .bind(&app.source_commit)
        .bind(&app.snapshot)
        .bind(serde_json::to_string(&app.build_args)?)
        .bind(&app.image)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a reload: the newly fetched source and the image it hashes to.
    pub async fn update_source(&self, app: &AppRecord) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE apps SET git_branch = ?, git_commit = ?, source_commit = ?, snapshot = ?, image = ? WHERE id = ?",
        )
        .bind(&app.git_branch)
        .bind(&app.git_commit)
        .bind(&app.source_commit)
        .bind(&app.snapshot)
        .bind(&app.image)
        .bind(&app.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_app(&self, id: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM apps WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn insert_list_delete() {
        let store = Store::in_memory().await.unwrap();
        let rec = AppRecord {
            id: "app_prd_1".into(),
            path: AppPath { domain: "a.localhost".into(), path: "/".into() },
            source_url: "-".into(),
            spec: "image".into(),
            params: BTreeMap::from([("image".into(), "nginx".into())]),
            app_config: BTreeMap::new(),
            created_at: 5,
            git_branch: None,
            git_commit: None,
            source_commit: None,
            snapshot: None,
            build_args: BTreeMap::new(),
            image: None,
        };
        store.insert_app(&rec).await.unwrap();
        assert_eq!(store.list_apps().await.unwrap(), vec![rec.clone()]);
        let mut dup = rec.clone();
        dup.id = "app_prd_2".into();
        assert!(store.insert_app(&dup).await.is_err(), "same domain and path twice must fail");
        let mut reloaded = rec.clone();
        reloaded.snapshot = Some("/s/2".into());
        reloaded.image = Some("berth-build:abc".into());
        store.update_source(&reloaded).await.unwrap();
        assert_eq!(store.list_apps().await.unwrap(), vec![reloaded]);
        assert!(store.delete_app("app_prd_1").await.unwrap());
        assert!(!store.delete_app("app_prd_1").await.unwrap());
        assert!(store.list_apps().await.unwrap().is_empty());
    }
}
