//! Vault (and OpenBao) KV v2 over its HTTP API: `GET /v1/<mount>/data/<path>` with the token.
//! A key is `<path>` (the secret must hold one field, or a field named `value`) or
//! `<path>#<field>`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub enum VaultError {
    NotFound,
    Other(String),
}

pub struct Vault {
    address: String,
    token: String,
    mount: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Vault {
    pub fn new(address: &str, token: String, mount: String) -> anyhow::Result<Vault> {
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_native_roots()?.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Vault { address: address.trim_end_matches('/').to_string(), token, mount, client })
    }

    pub async fn read(&self, key: &str) -> Result<String, VaultError> {
        let (path, field) = match key.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (key, None),
        };
        let url = format!("{}/v1/{}/data/{}", self.address, self.mount, path.trim_start_matches('/'));
        let req = http::Request::get(&url)
            .header("X-Vault-Token", &self.token)
            .body(Empty::new())
            .map_err(|e| VaultError::Other(e.to_string()))?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| VaultError::Other("no answer within 10s".into()))?
            .map_err(|e| VaultError::Other(format!("cannot reach {}: {e}", self.address)))?;
        let status = resp.status();
        if status == http::StatusCode::NOT_FOUND {
            return Err(VaultError::NotFound);
        }
        let body = resp.into_body().collect().await.map_err(|e| VaultError::Other(e.to_string()))?.to_bytes();
        if !status.is_success() {
            return Err(VaultError::Other(format!("the server answered {status}")));
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| VaultError::Other(e.to_string()))?;
        let data = json.pointer("/data/data").and_then(|d| d.as_object()).ok_or(VaultError::NotFound)?;
        let value = match field {
            Some(f) => data.get(f),
            None if data.len() == 1 => data.values().next(),
            None => data.get("value"),
        }
        .ok_or(VaultError::NotFound)?;
        Ok(match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}
