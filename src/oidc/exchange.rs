//! The back channel of a sign-in: the authorization code exchanged for tokens at the token
//! endpoint (with the PKCE verifier and the client's credentials in the form the provider
//! supports), and the claims the ID token lacks read from userinfo.

use ::http::Uri;
use base64::Engine as _;

use super::{
    Sso,
    config::IdentityClaim,
    http,
    identity::Person,
    provider::{self, Metadata},
};

impl Sso {
    pub(super) async fn exchange(
        &self,
        metadata: &Metadata,
        code: &str,
        state: &str,
    ) -> Result<serde_json::Value, http::CallError> {
        let uri: Uri = metadata
            .token_endpoint
            .parse()
            .map_err(|e| http::CallError::Transport(format!("token endpoint: {e}")))?;
        let verifier = self.verifier(state);
        let redirect_uri = self.config.redirect_url.to_string();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        let methods = metadata.token_endpoint_auth_methods_supported.as_deref();
        let supports = |m: &str| methods.is_none_or(|all| all.iter().any(|x| x == m));
        let basic = match &self.config.client_secret {
            Some(secret) if supports("client_secret_basic") || !supports("client_secret_post") => {
                // RFC 6749 section 2.3.1: each part form-encoded, then Basic.
                let pair = format!(
                    "{}:{}",
                    encode_form(&self.config.client_id),
                    encode_form(secret)
                );
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            Some(secret) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret));
                None
            }
            None => {
                form.push(("client_id", &self.config.client_id));
                None
            }
        };
        self.provider
            .client()
            .post_form(&uri, &form, basic.as_deref())
            .await
    }

    /// The person: the ID token's claims, completed from userinfo when it lacks the claims the
    /// identity rule needs. `email` and `email_verified` come together from one source.
    pub(super) async fn person(
        &self,
        metadata: &Metadata,
        claims: &provider::IdClaims,
        access_token: Option<&str>,
    ) -> Result<Person, String> {
        let verified = |v: Option<&serde_json::Value>| v.map(|v| v.as_bool() == Some(true));
        let mut person = Person {
            sub: claims.sub.clone(),
            email: claims.email.clone(),
            email_verified: verified(claims.email_verified.as_ref()),
            preferred_username: claims.preferred_username.clone(),
        };
        let lacking = match self.config.identity_claim {
            IdentityClaim::Email => person.email.is_none(),
            IdentityClaim::PreferredUsername => {
                person.preferred_username.is_none()
                    || (!self.config.allowed_email_domains.is_empty() && person.email.is_none())
            }
        };
        let (Some(endpoint), Some(access_token), true) =
            (&metadata.userinfo_endpoint, access_token, lacking)
        else {
            return Ok(person);
        };
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| format!("userinfo endpoint: {e}"))?;
        let info = self
            .provider
            .client()
            .get_json(&uri, Some(access_token))
            .await
            .map_err(|e| e.to_string())?;
        // OpenID Connect Core 5.3.2: userinfo's `sub` must be the ID token's.
        if info.get("sub").and_then(|s| s.as_str()) != Some(claims.sub.as_str()) {
            return Err("userinfo is about another subject".into());
        }
        if person.email.is_none() {
            person.email = info
                .get("email")
                .and_then(|e| e.as_str())
                .map(str::to_owned);
            person.email_verified = verified(info.get("email_verified"));
        }
        if person.preferred_username.is_none() {
            person.preferred_username = info
                .get("preferred_username")
                .and_then(|e| e.as_str())
                .map(str::to_owned);
        }
        Ok(person)
    }
}

fn encode_form(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
