//! Gateway tokens: HS256 JWTs with `sub`, `iat`, `exp` and `fpr`, a fingerprint of the user's
//! current password hash, so that a password change, removal or `disabled: true` ends every
//! session of that user on the next request. The upstream's own JWT secret never matters: the
//! gateway issues and checks these tokens itself and never forwards them.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{
    oidc::session::Revocations,
    users::{User, UserStore},
};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    fpr: String,
    /// The SSO session id, on tokens issued at a single sign-on login only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

/// Issues and checks gateway tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
    /// Tokens whose signature and claims were checked, by their exact text: the web app sends
    /// the same token on every call, and its signature check and JSON parse cost more than the
    /// rest of the request's authentication. Expiry and the user's current password hash are
    /// still checked on every request.
    verified: RwLock<HashMap<Box<str>, Checked>>,
    /// Ended SSO sessions: a token whose `sid` is in it is refused.
    revocations: Option<Arc<Revocations>>,
}

/// What a verified token says.
struct Checked {
    sub: String,
    exp: u64,
    fpr: String,
    sid: Option<String>,
}

/// A verified SSO token's session: its id and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id.
    pub sid: String,
    /// The token's expiry, seconds since the epoch.
    pub exp: u64,
}

/// Most verified tokens remembered; past it the memory starts again empty.
const VERIFIED_CAPACITY: usize = 4096;

fn fingerprint(user: &User) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&user.password_fingerprint[..16])
}

/// Whether a token's `fpr` is the user's current fingerprint, without allocating (it runs on
/// every request that carries a token).
fn fingerprint_matches(user: &User, fpr: &str) -> bool {
    let mut encoded = [0u8; 22]; // 16 bytes, base64 without padding
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(&user.password_fingerprint[..16], &mut encoded)
        .is_ok_and(|n| &encoded[..n] == fpr.as_bytes())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// Tokens signed with `secret`, or with a random per-process secret when there is none.
    #[must_use]
    pub fn new(secret: Option<&str>, lifetime: Duration) -> Self {
        let secret: Vec<u8> = match secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            lifetime,
            verified: RwLock::new(HashMap::new()),
            revocations: None,
        }
    }

    /// Refuses tokens whose SSO session is in `revocations`.
    #[must_use]
    pub fn with_revocations(mut self, revocations: Option<Arc<Revocations>>) -> Self {
        self.revocations = revocations;
        self
    }

    fn ended(&self, sid: Option<&str>) -> bool {
        sid.is_some_and(|sid| self.revocations.as_ref().is_some_and(|r| r.is_ended(sid)))
    }

    /// How long a token lives.
    #[must_use]
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for `user`, valid for the configured lifetime.
    ///
    /// # Panics
    /// Never in practice: HS256 signing of a small JSON object cannot fail.
    #[must_use]
    pub fn issue(&self, user: &User) -> String {
        self.sign(user, self.lifetime, None).0
    }

    /// A token for `user` from a single sign-on login: valid for `lifetime` (never longer than
    /// the configured token lifetime), carrying the session id `sid`. Returns it with its `exp`.
    #[must_use]
    pub fn issue_session(&self, user: &User, lifetime: Duration, sid: &str) -> (String, u64) {
        self.sign(user, lifetime.min(self.lifetime), Some(sid.to_owned()))
    }

    fn sign(&self, user: &User, lifetime: Duration, sid: Option<String>) -> (String, u64) {
        let iat = now_secs();
        let exp = iat.saturating_add(lifetime.as_secs());
        let claims = Claims {
            sub: user.username.clone(),
            iat,
            exp,
            fpr: fingerprint(user),
            sid,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail");
        (token, exp)
    }

    /// The SSO session a token belongs to, if it is a valid gateway token from an SSO login
    /// (whether or not its user still exists).
    #[must_use]
    pub fn session(&self, token: &str) -> Option<Session> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        Some(Session {
            sid: data.claims.sid?,
            exp: data.claims.exp,
        })
    }

    /// The user a token speaks for, if it is valid now: right algorithm and key, not expired,
    /// user still in the file with the same password hash.
    #[must_use]
    pub fn verify(&self, store: &UserStore, token: &str) -> Option<Arc<User>> {
        let now = now_secs();
        {
            let verified = self
                .verified
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Strictly before `exp`; at or past it the full check below decides.
            if let Some(checked) = verified.get(token).filter(|c| now < c.exp) {
                if self.ended(checked.sid.as_deref()) {
                    return None;
                }
                let user = store.by_name(&checked.sub)?;
                return fingerprint_matches(user, &checked.fpr).then(|| user.clone());
            }
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        if self.ended(data.claims.sid.as_deref()) {
            return None;
        }
        let user = store.by_name(&data.claims.sub)?;
        let valid = fingerprint_matches(user, &data.claims.fpr);
        if valid && now < data.claims.exp {
            let mut verified = self
                .verified
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(
                token.into(),
                Checked {
                    sub: data.claims.sub,
                    exp: data.claims.exp,
                    fpr: data.claims.fpr,
                    sid: data.claims.sid,
                },
            );
        }
        valid.then(|| user.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn store(hash: &str) -> UserStore {
        let text = format!("- username: alice\n  hashed_password: '{hash}'\n  api_key: k\n");
        UserStore::parse(Path::new("u.yml"), text.as_bytes()).unwrap()
    }

    fn forge(header: &str, claims: &serde_json::Value, key: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let signing = format!(
            "{}.{}",
            b64(header.as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(signing.as_bytes());
        format!("{signing}.{}", b64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn token_table() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let store = self::tests::store(&hash);
        let user = store.by_name("alice").unwrap();
        let secret = "0123456789abcdef0123456789abcdef";
        let tokens = Tokens::new(Some(secret), Duration::from_secs(600));
        let good = tokens.issue(user);
        assert_eq!(tokens.verify(&store, &good).unwrap().username, "alice");

        let fpr = fingerprint(user);
        let now = now_secs();
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        let cases: Vec<(&str, String)> = vec![
            (
                "expired",
                forge(
                    hs256,
                    &serde_json::json!({"sub":"alice","exp":now - 10,"iat":now - 100,"fpr":fpr}),
                    secret.as_bytes(),
                ),
            ),
            (
                "no exp",
                forge(
                    hs256,
                    &serde_json::json!({"sub":"alice","iat":now,"fpr":fpr}),
                    secret.as_bytes(),
                ),
            ),
            (
                "argilla default secret",
                forge(
                    hs256,
                    &serde_json::json!({"sub":"alice","exp":now + 100,"iat":now,"fpr":fpr}),
                    b"secret",
                ),
            ),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(r#"{"alg":"none","typ":"JWT"}"#),
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                        serde_json::json!({"sub":"alice","exp":now + 100,"iat":now,"fpr":fpr})
                            .to_string()
                    )
                ),
            ),
            (
                "HS512",
                forge(
                    r#"{"alg":"HS512","typ":"JWT"}"#,
                    &serde_json::json!({"sub":"alice","exp":now + 100,"iat":now,"fpr":fpr}),
                    secret.as_bytes(),
                ),
            ),
            (
                "unknown user",
                forge(
                    hs256,
                    &serde_json::json!({"sub":"mallory","exp":now + 100,"iat":now,"fpr":fpr}),
                    secret.as_bytes(),
                ),
            ),
            (
                "old password",
                forge(
                    hs256,
                    &serde_json::json!({"sub":"alice","exp":now + 100,"iat":now,"fpr":"AAAAAAAAAAAAAAAAAAAAAA"}),
                    secret.as_bytes(),
                ),
            ),
            ("tampered payload", {
                let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
                parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                    serde_json::json!({"sub":"alice","exp":now + 999_999,"iat":now,"fpr":fpr})
                        .to_string(),
                );
                parts.join(".")
            }),
            ("garbage", "not.a.token".to_owned()),
        ];
        for (case, token) in cases {
            assert!(tokens.verify(&store, &token).is_none(), "{case}");
        }
        let forged_ok = forge(
            hs256,
            &serde_json::json!({"sub":"alice","exp":now + 100,"iat":now,"fpr":fpr}),
            secret.as_bytes(),
        );
        assert!(
            tokens.verify(&store, &forged_ok).is_some(),
            "the forge helper makes valid tokens"
        );

        let other = Tokens::new(None, Duration::from_secs(600));
        assert!(other.verify(&store, &good).is_none(), "another key");
        let rehashed = self::tests::store(&bcrypt::hash("pw", 4).unwrap());
        assert!(
            tokens.verify(&rehashed, &good).is_none(),
            "password changed after the token was remembered"
        );
    }

    #[test]
    fn a_remembered_token_follows_the_current_users() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let store = self::tests::store(&hash);
        let tokens = Tokens::new(None, Duration::from_secs(600));
        let token = tokens.issue(store.by_name("alice").unwrap());
        assert!(tokens.verify(&store, &token).is_some());
        let removed = UserStore::parse(
            Path::new("u.yml"),
            format!("- username: bob\n  hashed_password: '{hash}'\n  api_key: k\n").as_bytes(),
        )
        .unwrap();
        assert!(tokens.verify(&removed, &token).is_none(), "user removed");
        let disabled = UserStore::parse(
            Path::new("u.yml"),
            format!(
                "- username: alice\n  hashed_password: '{hash}'\n  api_key: k\n  disabled: true\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let user = tokens.verify(&disabled, &token);
        assert!(
            user.is_some_and(|u| u.is_disabled()),
            "the token names the user; refusing disabled users is the caller's check"
        );
        assert!(tokens.verify(&store, &token).is_some(), "back again");
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let store = self::tests::store(&bcrypt::hash("pw", 4).unwrap());
        let user = store.by_name("alice").unwrap();
        let tokens = Tokens::new(None, Duration::from_secs(1));
        let token = tokens.issue(user);
        assert!(tokens.verify(&store, &token).is_some());
        assert!(tokens.verify(&store, &token).is_some(), "remembered");
        let exp = now_secs() + 1;
        // `exp` is in whole seconds: wait until it has certainly passed.
        while now_secs() <= exp {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(tokens.verify(&store, &token).is_none(), "expired");
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let store = self::tests::store(&bcrypt::hash("pw", 4).unwrap());
        let user = store.by_name("alice").unwrap();
        let tokens = Tokens::new(None, Duration::from_secs(600));
        let mut claims = Claims {
            sub: user.username.clone(),
            iat: now_secs(),
            exp: now_secs() + 600,
            fpr: fingerprint(user),
            sid: None,
        };
        for i in 0..VERIFIED_CAPACITY + 10 {
            claims.iat = i as u64;
            let token =
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding)
                    .unwrap();
            assert!(tokens.verify(&store, &token).is_some());
            assert!(tokens.verified.read().unwrap().len() <= VERIFIED_CAPACITY);
        }
    }
}
