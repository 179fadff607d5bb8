//! Apps' reload webhooks: creating or rotating an app's webhook secret (`berth app
//! webhook-secret`), and finding the secret of the app a webhook request names. The request
//! itself (signature check, answer) is `server/webhook.rs`'s.

use super::{AppError, Apps};
use crate::api::AppInfo;
use crate::source::SourceSpec;
use crate::store::AppWebhook;

/// Length of a generated webhook secret: 48 characters of `[0-9a-z]`, about 248 bits.
const SECRET_LEN: usize = 48;

/// The app a webhook request names, with its webhook.
pub struct WebhookTarget {
    /// The app's `[domain:]path`, to reload it by.
    pub app_path: String,
    pub webhook: AppWebhook,
}

impl Apps {
    /// Creates the app's webhook secret, or with `rotate` replaces it; `promote`: reloads
    /// through the webhook also promote. Returns the secret (shown once: it is not shown again).
    /// An app that has a secret keeps it unless `rotate`.
    pub async fn create_webhook_secret(
        &self,
        path: &str,
        rotate: bool,
        promote: bool,
    ) -> Result<(AppInfo, String), AppError> {
        let (_lock, app, _) = self.lock_app(path).await?;
        let source = SourceSpec::parse(&app.record.source_url).map_err(AppError::BadRequest)?;
        if source == SourceSpec::None {
            return Err(AppError::BadRequest(format!(
                "app {} has no source to reload: a reload webhook does not apply",
                app.record.path
            )));
        }
        if !rotate && self.store.app_webhook(&app.record.id).await?.is_some() {
            return Err(AppError::BadRequest(format!(
                "app {} already has a webhook secret; --rotate replaces it",
                app.record.path
            )));
        }
        let webhook = AppWebhook { secret: crate::ids::random_id(SECRET_LEN), promote };
        self.store.set_app_webhook(&app.record.id, &webhook).await?;
        tracing::info!(app = %app.record.path, promote, rotated = rotate, "webhook secret set");
        Ok((app.info(), webhook.secret))
    }

    /// The app at `path` and its webhook; `None` for an unknown app or an app without a
    /// webhook (the caller must not tell which).
    pub async fn webhook_target(&self, path: &str) -> Option<WebhookTarget> {
        let (app, _) = self.find(path).ok()?;
        let webhook = self.store.app_webhook(&app.record.id).await.ok()??;
        Some(WebhookTarget { app_path: app.record.path.to_string(), webhook })
    }
}
