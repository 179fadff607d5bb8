//! OpenID Connect login (`[auth.oidc_<name>]`) with the `openidconnect` crate: discovery
//! (the document's issuer must be the configured one), the authorization code flow with
//! PKCE, a state bound to the browser by a cookie and usable once, a nonce, and the ID
//! token's signature (the provider's JWKS) and claims (issuer, audience, expiry, nonce)
//! verified. Every call to the provider has a timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header;
use http::{Request, Response, StatusCode};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;

use super::session::{self, Session};
use super::{query_param, CALLBACK_PATH};
use crate::proxy::body::ProxyBody;
use crate::proxy::error_response;

/// Bound for each call to the provider (discovery, JWKS, token exchange).
const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a started login may take to come back.
const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// At most this many logins wait for their callback (the oldest are dropped).
const PENDING_MAX: usize = 10_000;
/// Discovery (and its keys) is fetched again after this long.
const METADATA_LIFETIME: Duration = Duration::from_secs(600);
/// The cookie binding a started login to the browser that started it.
pub(super) const STATE_COOKIE: &str = "berth_oidc_state";

/// `[auth.oidc_<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The environment variable holding the client secret (empty: a public client).
    #[serde(default)]
    pub client_secret_env: String,
    /// Scopes asked for besides `openid` (default `email`, `profile`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// When any of these lists is set, only users whose email is listed, whose email's domain
    /// is listed, or who have a listed group (the `groups` claim) get in.
    #[serde(default)]
    pub emails: Vec<String>,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "default_lifetime")]
    pub session_lifetime_secs: u64,
}

fn default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

fn default_lifetime() -> u64 {
    86400
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("unknown or already used login state (start the login again)")]
    UnknownState,
    #[error("the login was started in another browser")]
    StateMismatch,
    #[error("the provider refused: {0}")]
    Provider(String),
    #[error("the provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("discovery failed: {0}")]
    Discovery(String),
    #[error("ID token rejected: {0}")]
    BadToken(String),
    #[error("user {0} is not allowed by this provider's emails, domains or groups")]
    NotAllowed(String),
}

impl CallbackError {
    pub fn status(&self) -> StatusCode {
        match self {
            CallbackError::UnknownState | CallbackError::StateMismatch => StatusCode::BAD_REQUEST,
            CallbackError::Provider(_) | CallbackError::BadToken(_) => StatusCode::UNAUTHORIZED,
            CallbackError::Unreachable(_) | CallbackError::Discovery(_) => StatusCode::BAD_GATEWAY,
            CallbackError::NotAllowed(_) => StatusCode::FORBIDDEN,
        }
    }
}

struct Pending {
    verifier: String,
    nonce: String,
    redirect: String,
    next: String,
    created: Instant,
}

/// One configured provider.
pub struct Provider {
    name: String,
    config: OidcProviderConfig,
    issuer: IssuerUrl,
    secret: Option<ClientSecret>,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Provider {
    pub fn new(name: &str, config: &OidcProviderConfig) -> anyhow::Result<Provider> {
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| anyhow::anyhow!("[auth.{name}] issuer: {e}"))?;
        let secret = match config.client_secret_env.trim() {
            "" => None,
            var => Some(ClientSecret::new(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("[auth.{name}] client_secret_env: environment variable {var} is not set")
            })?)),
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(IDP_TIMEOUT)
            .timeout(IDP_TIMEOUT)
            .build()?;
        Ok(Provider {
            name: name.to_string(),
            config: config.clone(),
            issuer,
            secret,
            http,
            metadata: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The discovery document (fetched at first use and every [`METADATA_LIFETIME`]).
    async fn metadata(&self) -> Result<CoreProviderMetadata, CallbackError> {
        let mut cached = self.metadata.lock().await;
        if let Some((m, at)) = cached.as_ref() {
            if at.elapsed() < METADATA_LIFETIME {
                return Ok(m.clone());
            }
        }
        let fetch = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http);
        let m = match tokio::time::timeout(IDP_TIMEOUT * 2, fetch).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(CallbackError::Discovery(format!("{}: {}", self.issuer.as_str(), chain(&e)))),
            Err(_) => {
                return Err(CallbackError::Unreachable(format!("discovery of {} timed out", self.issuer.as_str())))
            }
        };
        *cached = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
        redirect: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        CallbackError,
    > {
        let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| CallbackError::Provider(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone(),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a login: remembers PKCE verifier, nonce and where to go back, and sends the
    /// browser to the provider.
    pub async fn start<B>(&self, req: &Request<B>, next: &str) -> Response<ProxyBody> {
        let metadata = match self.metadata().await {
            Ok(m) => m,
            Err(e) => return error_response(e.status(), &format!("login with {}: {e}", self.name)),
        };
        let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return error_response(StatusCode::BAD_REQUEST, "a login needs a Host header");
        };
        let redirect = format!("https://{host}{CALLBACK_PATH}");
        let client = match self.client(metadata, &redirect) {
            Ok(c) => c,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let name = self.name.clone();
        let mut auth = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(format!("{name}.{}", CsrfToken::new_random().secret())),
            Nonce::new_random,
        );
        for scope in &self.config.scopes {
            auth = auth.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = auth.set_pkce_challenge(challenge).url();
        {
            let mut pending = self.pending.lock().expect("pending logins lock");
            pending.retain(|_, p| p.created.elapsed() < PENDING_LIFETIME);
            if pending.len() >= PENDING_MAX {
                if let Some(oldest) = pending.iter().min_by_key(|(_, p)| p.created).map(|(k, _)| k.clone()) {
                    pending.remove(&oldest);
                }
            }
            pending.insert(
                state.secret().clone(),
                Pending {
                    verifier: verifier.secret().clone(),
                    nonce: nonce.secret().clone(),
                    redirect,
                    next: next.to_string(),
                    created: Instant::now(),
                },
            );
        }
        let mut resp = super::redirect(url.as_str());
        let cookie = session::secure_cookie(STATE_COOKIE.into(), state.secret().clone(), PENDING_LIFETIME);
        super::append_set_cookie(&mut resp, &cookie.to_string());
        resp
    }

    /// Finishes a login: the state (once, from this browser), the code exchange with the
    /// PKCE verifier, the ID token's signature and claims, the allow-lists.
    pub async fn callback<B>(&self, req: &Request<B>) -> Result<(Session, Duration, String), CallbackError> {
        let state = query_param(req, "state").ok_or(CallbackError::UnknownState)?;
        let pending = {
            let mut pending = self.pending.lock().expect("pending logins lock");
            pending.remove(&state).filter(|p| p.created.elapsed() < PENDING_LIFETIME)
        }
        .ok_or(CallbackError::UnknownState)?;
        let bound = session::request_jar(req.headers()).get(STATE_COOKIE).map(|c| c.value().to_string());
        if bound.as_deref() != Some(state.as_str()) {
            return Err(CallbackError::StateMismatch);
        }
        if let Some(error) = query_param(req, "error") {
            let detail = query_param(req, "error_description").unwrap_or_default();
            return Err(CallbackError::Provider(format!("{error} {detail}").trim().to_string()));
        }
        let code = query_param(req, "code").ok_or_else(|| CallbackError::Provider("no code in the callback".into()))?;
        let metadata = self.metadata().await?;
        let client = self.client(metadata, &pending.redirect)?;
        let exchange = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| CallbackError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier));
        let token = match tokio::time::timeout(IDP_TIMEOUT * 2, exchange.request_async(&self.http)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(CallbackError::Provider(format!("token exchange: {}", chain(&e)))),
            Err(_) => return Err(CallbackError::Unreachable("token exchange timed out".into())),
        };
        let id_token = token.id_token().ok_or_else(|| CallbackError::BadToken("no ID token in the answer".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(|e| CallbackError::BadToken(chain(&e)))?;
        let user = claims
            .preferred_username()
            .map(|u| u.as_str().to_string())
            .unwrap_or_else(|| claims.subject().as_str().to_string());
        let email = claims.email().map(|e| e.as_str().to_string());
        let groups = groups_claim(&id_token.to_string());
        if !allowed(&self.config, email.as_deref(), &groups) {
            return Err(CallbackError::NotAllowed(email.unwrap_or(user)));
        }
        let lifetime = Duration::from_secs(self.config.session_lifetime_secs.max(1));
        let expires = session::now_secs() + lifetime.as_secs();
        let s = Session { user, email, provider: self.name.clone(), expires, password: None };
        Ok((s, lifetime, pending.next))
    }
}

/// The provider a callback belongs to: the prefix of its state (`oidc_<name>.<random>`).
pub fn callback_provider<B>(req: &Request<B>) -> Option<String> {
    query_param(req, "state").and_then(|s| s.split_once('.').map(|(p, _)| p.to_string()))
}

/// The `groups` claim of a (verified) JWT.
fn groups_claim(jwt: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Groups {
        #[serde(default)]
        groups: Vec<String>,
    }
    jwt.split('.')
        .nth(1)
        .and_then(|payload| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<Groups>(&json).ok())
        .map(|g| g.groups)
        .unwrap_or_default()
}

/// The allow-lists: none set lets everyone in; otherwise one must match.
fn allowed(config: &OidcProviderConfig, email: Option<&str>, groups: &[String]) -> bool {
    if config.emails.is_empty() && config.domains.is_empty() && config.groups.is_empty() {
        return true;
    }
    let email = email.map(str::to_ascii_lowercase);
    let by_email = email.as_deref().is_some_and(|e| config.emails.iter().any(|a| a.eq_ignore_ascii_case(e)));
    let by_domain = email
        .as_deref()
        .and_then(|e| e.rsplit_once('@'))
        .is_some_and(|(_, d)| config.domains.iter().any(|a| a.eq_ignore_ascii_case(d)));
    let by_group = groups.iter().any(|g| config.groups.contains(g));
    by_email || by_domain || by_group
}

/// An error with its causes, so the provider's own message reaches the user.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> OidcProviderConfig {
        toml::from_str(&format!("issuer = \"https://idp.example\"\nclient_id = \"berth\"\n{extra}")).unwrap()
    }

    #[test]
    fn allow_lists() {
        assert!(allowed(&config(""), None, &[]));
        let c = config("emails = [\"Alice@Example.com\"]\ndomains = [\"corp.example\"]\ngroups = [\"ops\"]");
        assert!(allowed(&c, Some("alice@example.com"), &[]));
        assert!(allowed(&c, Some("bob@corp.example"), &[]));
        assert!(allowed(&c, None, &["ops".into()]));
        assert!(!allowed(&c, Some("bob@example.com"), &["dev".into()]));
        assert!(!allowed(&c, None, &[]));
        assert_eq!(c.scopes, ["email", "profile"]);
        assert_eq!(c.session_lifetime_secs, 86400);
    }

    #[test]
    fn groups_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"a","groups":["ops","dev"]}"#);
        assert_eq!(groups_claim(&format!("h.{payload}.s")), ["ops", "dev"]);
        assert!(groups_claim("garbage").is_empty());
    }
}
