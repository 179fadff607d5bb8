//! The CLI's side of the admin API: HTTP/1.1 over the unix socket, JSON in and out, and
//! errors turned into one readable line.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::api::ErrorBody;

pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(socket: PathBuf) -> AdminClient {
        AdminClient { socket }
    }

    /// Sends one request; a non-2xx answer becomes an error carrying the server's message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Response<Incoming>> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "cannot reach the berth server at {} ({e}); is it running? Start it with: berth server start",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let query = serde_urlencoded::to_string(query)?;
        let uri = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, "berth")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = sender.send_request(req).await.map_err(|e| anyhow!("the berth server did not answer: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()));
            bail!(message);
        }
        Ok(resp)
    }

    /// A request whose answer is JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &impl Serialize,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let resp = self.send(method, path, query, body).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("unexpected answer from the server: {e}"))
    }
}
