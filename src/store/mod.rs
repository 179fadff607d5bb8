//! App metadata in SQLite (sqlx), with embedded migrations: apps, and their versions (every
//! staged change adds one; prod and stage each point at one). Stores what the user asked for,
//! never runtime state such as container ids or ports, and never resolved secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use crate::app_path::AppPath;

mod declare;
pub use declare::{SyncRecord, SyncRun};
mod dev;
mod webhooks;
pub use webhooks::AppWebhook;
pub mod audit;

/// One configuration of an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppConfig {
    pub params: BTreeMap<String, String>,
    /// Per-app settings (`--conf`), e.g. `container.idle_shutdown_secs`.
    pub app_config: BTreeMap<String, String>,
    /// Build args (`--carg`).
    pub build_args: BTreeMap<String, String>,
    /// Container options (`--copt`); an empty value is a bare flag.
    pub container_options: BTreeMap<String, String>,
    /// Requested git branch and commit (`--branch`, `--commit`).
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
    /// What was fetched: the commit (git sources) and the snapshot folder berth keeps.
    pub source_commit: Option<String>,
    pub snapshot: Option<String>,
    /// For built apps: the image name the build inputs hash to.
    pub image: Option<String>,
    /// A dev app (`app create --dev`): built from its local folder as it is, rebuilt on every
    /// change; no stage, never promoted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub number: i64,
    pub config: AppConfig,
    /// What made this version: `create`, `param update`, `reload`, ...
    pub reason: String,
    pub created_at: i64,
}

/// An app as stored, with the versions prod and stage serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub id: String,
    pub path: AppPath,
    pub source_url: String,
    pub spec: String,
    pub created_at: i64,
    pub prod: Version,
    pub stage: Version,
    pub previous_prod_version: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations. The
    /// database's folder and files are owner-only (also fixed for a database made before).
    pub async fn open(file: &Path) -> anyhow::Result<Store> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
        // SQLite gives its -wal and -shm files the database file's mode.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let f = std::path::PathBuf::from(format!("{}{suffix}", file.display()));
            if f.exists() {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))?
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal);
        Self::with_options(opts).await
    }

    pub async fn in_memory() -> anyhow::Result<Store> {
        Self::with_options(SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true)).await
    }

    async fn with_options(opts: SqliteConnectOptions) -> anyhow::Result<Store> {
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Every app with the versions prod and stage serve, in one query (start-up reads all
    /// apps; one query per version made start-up with 10,000 apps take over a second). Rows
    /// are streamed and turned into records one at a time: holding all of SQLite's row values
    /// at once left about 20 MB of freed but retained heap after a start with 10,000 apps.
    pub async fn list_apps(&self) -> anyhow::Result<Vec<AppRecord>> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query(
            "SELECT a.id, a.domain, a.path, a.source_url, a.spec, a.created_at, a.previous_prod_version, \
                    p.version AS p_version, p.config AS p_config, p.reason AS p_reason, p.created_at AS p_created_at, \
                    s.version AS s_version, s.config AS s_config, s.reason AS s_reason, s.created_at AS s_created_at \
             FROM apps a \
             JOIN app_versions p ON p.app_id = a.id AND p.version = a.prod_version \
             JOIN app_versions s ON s.app_id = a.id AND s.version = a.stage_version \
             ORDER BY a.created_at, a.id",
        )
        .fetch(&self.pool);
        let mut records = Vec::new();
        while let Some(r) = rows.try_next().await? {
            records.push(AppRecord {
                id: r.get("id"),
                path: AppPath { domain: r.get("domain"), path: r.get("path") },
                source_url: r.get("source_url"),
                spec: r.get("spec"),
                created_at: r.get("created_at"),
                prod: columns_to_version(&r, "p_")?,
                stage: columns_to_version(&r, "s_")?,
                previous_prod_version: r.get("previous_prod_version"),
            });
        }
        Ok(records)
    }

    pub async fn version(&self, app_id: &str, number: i64) -> anyhow::Result<Version> {
        let r = sqlx::query(
            "SELECT version, config, reason, created_at FROM app_versions WHERE app_id = ? AND version = ?",
        )
        .bind(app_id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| anyhow::anyhow!("version {number} of app {app_id} not found"))?;
        row_to_version(&r)
    }

    pub async fn versions(&self, app_id: &str) -> anyhow::Result<Vec<Version>> {
        let rows = sqlx::query(
            "SELECT version, config, reason, created_at FROM app_versions WHERE app_id = ? ORDER BY version",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_version).collect()
    }

    /// Stores a new app whose prod and stage both serve its first version.
    pub async fn insert_app(&self, app: &AppRecord) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO apps (id, domain, path, source_url, spec, created_at, prod_version, stage_version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&app.id)
        .bind(&app.path.domain)
        .bind(&app.path.path)
        .bind(&app.source_url)
        .bind(&app.spec)
        .bind(app.created_at)
        .bind(app.prod.number)
        .bind(app.stage.number)
        .execute(&mut *tx)
        .await?;
        insert_version(&mut tx, &app.id, &app.prod).await?;
        if app.stage.number != app.prod.number {
            insert_version(&mut tx, &app.id, &app.stage).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds a version and points stage at it (and prod too when `promote`). Returns its number.
    pub async fn add_version(
        &self,
        app_id: &str,
        config: &AppConfig,
        reason: &str,
        promote: bool,
    ) -> anyhow::Result<i64> {
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 AS next FROM app_versions WHERE app_id = ?")
            .bind(app_id)
            .fetch_one(&mut *tx)
            .await?
            .get("next");
        let version = Version { number: next, config: config.clone(), reason: reason.into(), created_at: now_secs() };
        insert_version(&mut tx, app_id, &version).await?;
        sqlx::query("UPDATE apps SET stage_version = ? WHERE id = ?").bind(next).bind(app_id).execute(&mut *tx).await?;
        if promote {
            set_prod(&mut tx, app_id, next).await?;
        }
        tx.commit().await?;
        Ok(next)
    }

    /// Points prod at `version` (promote, switch, revert), remembering the one it replaces.
    pub async fn set_prod_version(&self, app_id: &str, version: i64) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        set_prod(&mut tx, app_id, version).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_app(&self, id: &str) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM app_versions WHERE app_id = ?").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM apps WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn insert_version(tx: &mut sqlx::SqliteConnection, app_id: &str, v: &Version) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO app_versions (app_id, version, config, reason, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(app_id)
        .bind(v.number)
        .bind(serde_json::to_string(&v.config)?)
        .bind(&v.reason)
        .bind(v.created_at)
        .execute(tx)
        .await?;
    Ok(())
}

async fn set_prod(tx: &mut sqlx::SqliteConnection, app_id: &str, version: i64) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE apps SET previous_prod_version = prod_version, prod_version = ? WHERE id = ? AND prod_version != ?",
    )
    .bind(version)
    .bind(app_id)
    .bind(version)
    .execute(tx)
    .await?;
    Ok(())
}

fn row_to_version(r: &sqlx::sqlite::SqliteRow) -> anyhow::Result<Version> {
    columns_to_version(r, "")
}

/// A version from the columns `{prefix}version`, `{prefix}config`, `{prefix}reason` and
/// `{prefix}created_at`.
fn columns_to_version(r: &sqlx::sqlite::SqliteRow, prefix: &str) -> anyhow::Result<Version> {
    let column = |name: &str| format!("{prefix}{name}");
    Ok(Version {
        number: r.get(column("version").as_str()),
        config: serde_json::from_str(r.get(column("config").as_str()))?,
        reason: r.get(column("reason").as_str()),
        created_at: r.get(column("created_at").as_str()),
    })
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An image app at `a.localhost:/` with version 1 as prod and stage (for store tests).
    pub(crate) fn record(id: &str) -> AppRecord {
        let v1 = Version {
            number: 1,
            config: AppConfig { params: BTreeMap::from([("image".into(), "nginx".into())]), ..Default::default() },
            reason: "create".into(),
            created_at: 5,
        };
        AppRecord {
            id: id.into(),
            path: AppPath { domain: "a.localhost".into(), path: "/".into() },
            source_url: "-".into(),
            spec: "image".into(),
            created_at: 5,
            prod: v1.clone(),
            stage: v1,
            previous_prod_version: 0,
        }
    }

    #[tokio::test]
    async fn insert_list_delete() {
        let store = Store::in_memory().await.unwrap();
        let rec = record("app_1");
        store.insert_app(&rec).await.unwrap();
        assert_eq!(store.list_apps().await.unwrap(), vec![rec.clone()]);
        assert!(store.insert_app(&record("app_2")).await.is_err(), "same domain and path twice must fail");
        assert!(store.delete_app("app_1").await.unwrap());
        assert!(!store.delete_app("app_1").await.unwrap());
        assert!(store.list_apps().await.unwrap().is_empty());
        assert!(store.versions("app_1").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn staged_versions_promote_and_switch() {
        let store = Store::in_memory().await.unwrap();
        store.insert_app(&record("app_1")).await.unwrap();
        let mut cfg = record("app_1").stage.config;
        cfg.params.insert("A".into(), "1".into());
        assert_eq!(store.add_version("app_1", &cfg, "param update", false).await.unwrap(), 2);
        let app = &store.list_apps().await.unwrap()[0];
        assert_eq!((app.prod.number, app.stage.number), (1, 2));
        assert_eq!(app.stage.config.params["A"], "1");
        assert!(!app.prod.config.params.contains_key("A"));
        store.set_prod_version("app_1", 2).await.unwrap();
        let app = &store.list_apps().await.unwrap()[0];
        assert_eq!((app.prod.number, app.previous_prod_version), (2, 1));
        assert_eq!(store.add_version("app_1", &cfg, "reload", true).await.unwrap(), 3);
        let app = &store.list_apps().await.unwrap()[0];
        assert_eq!((app.prod.number, app.stage.number, app.previous_prod_version), (3, 3, 2));
        assert_eq!(store.versions("app_1").await.unwrap().len(), 3);
        assert!(store.version("app_1", 9).await.is_err());
    }
}
