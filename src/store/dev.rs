//! Dev apps' stored configuration: a dev app is rebuilt from its folder in place (no new
//! version per save), so the version it serves is updated with the image it now runs, and a
//! restarted server serves (and adopts the container of) that image.

use super::{AppConfig, Store};

impl Store {
    /// Replaces the configuration stored for version `number` of the app.
    pub async fn replace_version_config(&self, app_id: &str, number: i64, config: &AppConfig) -> anyhow::Result<()> {
        sqlx::query("UPDATE app_versions SET config = ? WHERE app_id = ? AND version = ?")
            .bind(serde_json::to_string(config)?)
            .bind(app_id)
            .bind(number)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_version_keeps_its_number_and_gets_the_new_config() {
        let store = Store::in_memory().await.unwrap();
        let app = crate::store::tests::record("app_dev_1");
        store.insert_app(&app).await.unwrap();
        let cfg = AppConfig { image: Some("berth-app:new".into()), dev: true, ..Default::default() };
        store.replace_version_config(&app.id, 1, &cfg).await.unwrap();
        let stored = &store.list_apps().await.unwrap()[0];
        assert_eq!((stored.prod.number, &stored.prod.config), (1, &cfg));
        assert_eq!(store.versions(&app.id).await.unwrap().len(), 1);
    }
}
