//! The identity provider as the gateway knows it: its discovery document (fetched at start and
//! retried in the background until it answers), its signing keys (cached for at most
//! [`KEY_MAX_AGE`], fetched again on an unknown `kid` at most once per
//! [`KEY_REFETCH_INTERVAL`]) and the ID-token check.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwapOption;
use http::Uri;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{Jwk, JwkSet},
};
use serde::Deserialize;

use super::http::{CallError, Client};

/// Signature algorithms accepted on ID tokens: asymmetric only, never `none` or `HS*` (an
/// `HS256` token "signed" with the provider's public key must not pass).
pub const ALLOWED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Shortest time between two key-set fetches caused by an unknown `kid`, so that tokens with
/// made-up key ids cannot make the gateway hammer the provider.
pub const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// How long a fetched key set is used before it is fetched again, so that a key the provider
/// withdrew stops being trusted.
pub const KEY_MAX_AGE: Duration = Duration::from_secs(3600);

/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// Oldest `iat` accepted on an ID token: it is used at once after the code exchange.
pub const MAX_ID_TOKEN_AGE_SECS: u64 = 600;

/// The parts of the discovery document the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer exactly.
    pub issuer: String,
    /// Where the browser signs in.
    pub authorization_endpoint: String,
    /// Where codes are exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
    /// Claims for an access token, when the ID token lacks them.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// RP-initiated logout.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 9207: whether authorization answers name their issuer (then `iss` is required).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    /// Client authentication methods at the token endpoint.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// What an ID token says, once checked.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    /// The subject.
    pub sub: String,
    /// The nonce sent with the authorization request.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Authorized party.
    #[serde(default)]
    pub azp: Option<String>,
    /// Audience: one string or a list.
    pub aud: serde_json::Value,
    /// Issued at.
    pub iat: u64,
    /// Expires.
    pub exp: u64,
    /// The e-mail, when the provider puts it in the ID token.
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the provider verified it (must be `true` to be used).
    #[serde(default)]
    pub email_verified: Option<serde_json::Value>,
    /// The username, when the provider puts it in the ID token.
    #[serde(default)]
    pub preferred_username: Option<String>,
}

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its header is not readable.
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
    /// `alg` not in the allow-list.
    #[error("the ID token's algorithm {0} is not accepted")]
    Algorithm(String),
    /// No key with that `kid`, even after fetching the key set again.
    #[error("no provider key matches the ID token's key id")]
    UnknownKey,
    /// The key set could not be fetched.
    #[error("the provider's keys could not be fetched: {0}")]
    Keys(String),
    /// Signature, issuer, audience or time checks failed.
    #[error("the ID token failed its check: {0}")]
    Invalid(String),
}

struct Keys {
    set: JwkSet,
    /// When the set was fetched.
    fetched: Instant,
    /// When an unknown `kid` last caused a fetch.
    refetched: Option<Instant>,
}

/// The provider: discovery and keys, shared by every request.
pub struct Provider {
    issuer: String,
    client_id: String,
    client: Client,
    metadata: ArcSwapOption<Metadata>,
    /// Why discovery last failed, for the 503 page and the log.
    last_error: Mutex<Option<String>>,
    keys: tokio::sync::Mutex<Option<Keys>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Provider {
    /// A provider not yet discovered.
    #[must_use]
    pub fn new(issuer: &str, client_id: &str, client: Client) -> Self {
        Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client,
            metadata: ArcSwapOption::empty(),
            last_error: Mutex::new(Some("discovery has not run yet".into())),
            keys: tokio::sync::Mutex::new(None),
        }
    }

    /// The HTTP client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The discovery document, once fetched.
    #[must_use]
    pub fn metadata(&self) -> Option<Arc<Metadata>> {
        self.metadata.load_full()
    }

    /// Why the provider is not usable yet.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fetches `/.well-known/openid-configuration` once and keeps it if it is valid.
    ///
    /// # Errors
    /// The provider does not answer, or its document is not for the configured issuer.
    pub async fn discover(&self) -> Result<(), String> {
        let result = self.fetch_metadata().await;
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(metadata) => {
                self.metadata.store(Some(Arc::new(metadata)));
                *last = None;
                Ok(())
            }
            Err(e) => {
                *last = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn fetch_metadata(&self) -> Result<Metadata, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let value = self
            .client
            .get_json(&uri, None)
            .await
            .map_err(|e| format!("discovery at {url}: {e}"))?;
        let metadata: Metadata = serde_json::from_value(value)
            .map_err(|e| format!("discovery at {url}: not a provider document: {e}"))?;
        // OpenID Connect Discovery 1.0, section 4.3: the issuer must match exactly.
        if metadata.issuer != self.issuer {
            return Err(format!(
                "discovery at {url}: the provider calls itself {:?}, not the configured {:?} \
                 (oidc.issuer_url must be its issuer exactly)",
                metadata.issuer, self.issuer
            ));
        }
        for (name, endpoint) in [
            ("authorization_endpoint", &metadata.authorization_endpoint),
            ("token_endpoint", &metadata.token_endpoint),
            ("jwks_uri", &metadata.jwks_uri),
        ] {
            endpoint
                .parse::<Uri>()
                .map_err(|e| format!("discovery at {url}: {name}: {e}"))?;
        }
        Ok(metadata)
    }

    /// Runs discovery until it succeeds: at once, then with a growing pause (1 s to 60 s).
    pub async fn discover_until_ready(self: Arc<Self>) {
        let mut pause = Duration::from_secs(1);
        loop {
            match self.discover().await {
                Ok(()) => {
                    tracing::info!(issuer = self.issuer, "single sign-on: provider discovered");
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        error = e,
                        retry_in_secs = pause.as_secs(),
                        "single sign-on unavailable: provider discovery failed (API keys, \
                         tokens and Basic keep working)"
                    );
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(60));
        }
    }

    async fn fetch_keys(&self, metadata: &Metadata) -> Result<JwkSet, String> {
        let uri: Uri = metadata.jwks_uri.parse().map_err(|e| format!("{e}"))?;
        let value = self
            .client
            .get_json(&uri, None)
            .await
            .map_err(|e: CallError| e.to_string())?;
        serde_json::from_value(value).map_err(|e| format!("not a key set: {e}"))
    }

    /// The key for `kid` (or the only signing key when the token names none).
    async fn key(&self, metadata: &Metadata, kid: Option<&str>) -> Result<Jwk, TokenError> {
        let find = |set: &JwkSet| -> Option<Jwk> {
            if let Some(kid) = kid {
                return set.find(kid).cloned();
            }
            let mut signing = set.keys.iter().filter(|k| {
                !matches!(
                    k.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                )
            });
            let first = signing.next()?;
            signing.next().is_none().then(|| first.clone())
        };
        let mut keys = self.keys.lock().await;
        let fresh = keys
            .as_ref()
            .is_some_and(|k| k.fetched.elapsed() < KEY_MAX_AGE);
        if fresh && let Some(found) = keys.as_ref().and_then(|k| find(&k.set)) {
            return Ok(found);
        }
        // A fresh set without the key: an unknown `kid`, which may fetch at a bounded rate.
        let refetched = keys.as_ref().and_then(|k| k.refetched);
        if fresh && refetched.is_some_and(|at| at.elapsed() < KEY_REFETCH_INTERVAL) {
            return Err(TokenError::UnknownKey);
        }
        let set = self.fetch_keys(metadata).await.map_err(TokenError::Keys)?;
        let found = find(&set);
        *keys = Some(Keys {
            set,
            fetched: Instant::now(),
            refetched: if fresh {
                Some(Instant::now())
            } else {
                refetched
            },
        });
        found.ok_or(TokenError::UnknownKey)
    }

    /// Checks an ID token: allowed algorithm, the provider's key, exact issuer, our audience
    /// (and `azp` when present or when there are several audiences), `exp`, `iat`, `nonce`.
    ///
    /// # Errors
    /// Why it was refused.
    pub async fn verify_id_token(
        &self,
        metadata: &Metadata,
        token: &str,
        nonce: &str,
    ) -> Result<IdClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let jwk = self.key(metadata, header.kid.as_deref()).await?;
        if let Some(key_alg) = jwk.common.key_algorithm
            && format!("{key_alg:?}") != format!("{:?}", header.alg)
        {
            return Err(TokenError::Algorithm(format!(
                "{:?} (the key is for {key_alg:?})",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::Keys(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let audiences = match &claims.aud {
            serde_json::Value::String(_) => 1,
            serde_json::Value::Array(list) => list.len(),
            _ => 0,
        };
        if audiences > 1 && claims.azp.is_none() {
            return Err(TokenError::Invalid(
                "several audiences and no azp".to_owned(),
            ));
        }
        if claims
            .azp
            .as_deref()
            .is_some_and(|azp| azp != self.client_id)
        {
            return Err(TokenError::Invalid("azp is another client".to_owned()));
        }
        let now = now_secs();
        if claims.iat > now + LEEWAY_SECS {
            return Err(TokenError::Invalid("iat is in the future".to_owned()));
        }
        if claims.iat + MAX_ID_TOKEN_AGE_SECS + LEEWAY_SECS < now {
            return Err(TokenError::Invalid("iat is too old".to_owned()));
        }
        // Both sides are random strings the gateway made; a plain comparison leaks nothing
        // useful, but the constant-time one costs nothing either.
        let expected = nonce.as_bytes();
        let matches = claims.nonce.as_deref().is_some_and(|n| {
            use subtle::ConstantTimeEq as _;
            n.len() == expected.len() && bool::from(n.as_bytes().ct_eq(expected))
        });
        if !matches {
            return Err(TokenError::Invalid("nonce mismatch".to_owned()));
        }
        Ok(claims)
    }
}
