//! Apps' webhook secrets (`app_webhooks`): the HMAC key that signs an app's reload webhook and
//! whether a reload through it promotes. Deleted with the app (foreign key cascade).

use sqlx::Row;

use super::{now_secs, Store};

/// An app's webhook as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppWebhook {
    pub secret: String,
    /// A reload through the webhook also promotes the new version to prod.
    pub promote: bool,
}

impl Store {
    /// The app's webhook, if it has one.
    pub async fn app_webhook(&self, app_id: &str) -> anyhow::Result<Option<AppWebhook>> {
        let row = sqlx::query("SELECT secret, promote FROM app_webhooks WHERE app_id = ?")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| AppWebhook { secret: r.get("secret"), promote: r.get::<i64, _>("promote") != 0 }))
    }

    /// Stores the app's webhook, replacing any it had.
    pub async fn set_app_webhook(&self, app_id: &str, webhook: &AppWebhook) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO app_webhooks (app_id, secret, promote, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (app_id) DO UPDATE SET secret = excluded.secret, promote = excluded.promote, \
             created_at = excluded.created_at",
        )
        .bind(app_id)
        .bind(&webhook.secret)
        .bind(webhook.promote as i64)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_replace_and_cascade_on_app_delete() {
        let store = Store::in_memory().await.unwrap();
        let app = crate::store::tests::record("app_1");
        store.insert_app(&app).await.unwrap();
        assert_eq!(store.app_webhook(&app.id).await.unwrap(), None);
        let first = AppWebhook { secret: "one".into(), promote: false };
        store.set_app_webhook(&app.id, &first).await.unwrap();
        assert_eq!(store.app_webhook(&app.id).await.unwrap(), Some(first));
        let second = AppWebhook { secret: "two".into(), promote: true };
        store.set_app_webhook(&app.id, &second).await.unwrap();
        assert_eq!(store.app_webhook(&app.id).await.unwrap(), Some(second));
        store.delete_app(&app.id).await.unwrap();
        assert_eq!(store.app_webhook(&app.id).await.unwrap(), None);
    }
}
