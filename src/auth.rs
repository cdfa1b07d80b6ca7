//! Request headers → [`Identity`].
//!
//! Credentials are taken in Argilla's order, and the first one present decides: a present but
//! wrong credential is a 401 and never falls through to the next (`X-Argilla-Api-Key`,
//! `X-Rubrix-Api-Key`, `Authorization: Bearer <gateway token or API key>`, `Authorization:
//! Basic`). An empty header counts as absent, as in Argilla 1.6+. Disabled users are refused on
//! every path, but only after their credential was verified, so the answer never tells a
//! stranger that an account exists.
//!
//! API keys are found by digest. Passwords are checked by [`crate::password::Verifier`] (bcrypt
//! on its own threads, remembered, coalesced); this module keeps the failure budgets around each
//! check: requests that wait for a running check of the same credentials take no place in them.

use std::{net::IpAddr, sync::Arc};

use base64::Engine as _;
use http::HeaderMap;

use crate::{
    error::Reject,
    limit::Limiter,
    password::{Turn, Verifier},
    reload::Users,
    token::Tokens,
    users::{User, UserStore},
};

/// The header that carries Bearer and Basic credentials.
const AUTHORIZATION: &str = "authorization";

/// The credential headers a client may send, in the order [`credential`] reads them (every one
/// but `Authorization` holds an API key); all are removed before forwarding. One list for both,
/// so that a header read as a credential is never forwarded upstream.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["x-argilla-api-key", "x-rubrix-api-key", AUTHORIZATION];

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// An API key in `X-Argilla-Api-Key`, `X-Rubrix-Api-Key` or `Authorization: Bearer`.
    ApiKey,
    /// A gateway token in `Authorization: Bearer`.
    Token,
    /// `Authorization: Basic`.
    Basic,
}

impl Method {
    /// A short label for logs and metrics.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Token => "token",
            Self::Basic => "basic",
        }
    }
}

/// An authenticated user, with the store it was found in (so that workspace checks use the
/// same snapshot).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user.
    pub user: Arc<User>,
    /// The snapshot the user came from.
    pub store: Arc<UserStore>,
    /// How the user authenticated.
    pub method: Method,
}

/// A credential as found in the headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// An API key from one of the key headers.
    ApiKey(String),
    /// The value after `Bearer `: a gateway token or, for older clients, an API key.
    Bearer(String),
    /// Decoded Basic credentials.
    Basic {
        /// Everything before the first colon.
        username: String,
        /// Everything after it.
        password: String,
    },
}

fn unauthenticated(reason: &'static str) -> Reject {
    Reject::Unauthenticated {
        basic: false,
        reason,
    }
}

fn bad_basic(reason: &'static str) -> Reject {
    Reject::Unauthenticated {
        basic: true,
        reason,
    }
}

/// The single non-empty value of a header; a repetition with a different value is refused.
fn single(headers: &HeaderMap, name: &str) -> Result<Option<String>, Reject> {
    let mut chosen: Option<&str> = None;
    for value in headers.get_all(name) {
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("credential header is not visible ASCII"))?;
        if value.is_empty() {
            continue;
        }
        match chosen {
            Some(previous) if previous != value => {
                return Err(unauthenticated(
                    "credential header repeated with different values",
                ));
            }
            _ => chosen = Some(value),
        }
    }
    Ok(chosen.map(str::to_owned))
}

/// Finds the credential that decides, without checking it.
///
/// # Errors
/// 401 for a credential header that is present but malformed.
pub fn credential(headers: &HeaderMap) -> Result<Option<Credential>, Reject> {
    for name in CREDENTIAL_HEADERS {
        let Some(value) = single(headers, name)? else {
            continue;
        };
        return if name == AUTHORIZATION {
            authorization(&value).map(Some)
        } else {
            Ok(Some(Credential::ApiKey(value)))
        };
    }
    Ok(None)
}

/// The credential in an `Authorization` value: Bearer or Basic.
fn authorization(value: &str) -> Result<Credential, Reject> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(unauthenticated("empty bearer token"));
        }
        return Ok(Credential::Bearer(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| bad_basic("basic credentials are not base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad_basic("basic credentials are not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad_basic("basic credentials without a colon"))?;
        if username.is_empty() {
            return Err(bad_basic("basic credentials without a username"));
        }
        return Ok(Credential::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    Err(unauthenticated("unsupported authorization scheme"))
}

/// What authentication needs from the gateway's state.
pub struct Authenticator<'a> {
    /// The live users.
    pub users: &'a Users,
    /// bcrypt and its memory.
    pub verifier: &'a Verifier,
    /// Gateway tokens.
    pub tokens: &'a Tokens,
    /// Failed-authentication budgets.
    pub limiter: &'a Limiter,
}

impl Authenticator<'_> {
    /// Authenticates a request from `client`.
    ///
    /// # Errors
    /// 401 (no or wrong credentials), 400 (disabled user), 429 (failure budget spent).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Identity, Reject> {
        let store = self.users.snapshot();
        let found = match credential(headers)? {
            None => return Err(unauthenticated("no credentials")),
            Some(Credential::ApiKey(key)) => self.by_key(&store, &key, client, Method::ApiKey)?,
            Some(Credential::Bearer(value)) => {
                if let Some(user) = store.by_key(&value) {
                    (user.clone(), Method::ApiKey)
                } else {
                    self.limiter.check(client, None)?;
                    if let Some(user) = self.tokens.verify(&store, &value) {
                        (user, Method::Token)
                    } else {
                        self.limiter.fail(client, None);
                        return Err(unauthenticated("unknown API key or invalid token"));
                    }
                }
            }
            Some(Credential::Basic { username, password }) => {
                let user = self.password(&store, &username, &password, client).await?;
                (user, Method::Basic)
            }
        };
        let (user, method) = found;
        if user.is_disabled() {
            return Err(Reject::Inactive {
                user: user.username.clone(),
            });
        }
        Ok(Identity {
            user,
            store,
            method,
        })
    }

    fn by_key(
        &self,
        store: &UserStore,
        key: &str,
        client: IpAddr,
        method: Method,
    ) -> Result<(Arc<User>, Method), Reject> {
        self.limiter.check(client, None)?;
        if let Some(user) = store.by_key(key) {
            Ok((user.clone(), method))
        } else {
            self.limiter.fail(client, None);
            Err(unauthenticated("unknown API key"))
        }
    }

    /// Verifies a username and password (Basic or login).
    ///
    /// # Errors
    /// 401 (basic challenge) for a wrong pair, 429 when a budget is spent.
    pub async fn password(
        &self,
        store: &UserStore,
        username: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Arc<User>, Reject> {
        let user = store.by_name(username);
        if let Some(user) = user
            && self.verifier.remembered(user, password)
        {
            return Ok(user.clone());
        }
        loop {
            match self.verifier.turn(username, user, password) {
                Turn::Wait(mut running) => {
                    // The same credentials are being checked: one guess, not another, so this
                    // request takes no place in the budgets while it waits (taking one would
                    // refuse a client's own concurrent first requests). A spent budget still
                    // refuses it, and a wrong answer still counts as its failure.
                    self.limiter.check(client, Some(username))?;
                    let Some(ok) = Verifier::answer(&mut running).await else {
                        continue; // that check was abandoned: take our own turn
                    };
                    if let (true, Some(user)) = (ok, user) {
                        return Ok(user.clone());
                    }
                    self.limiter.fail(client, Some(username));
                    return Err(bad_basic("wrong username or password"));
                }
                Turn::Lead(flight) => {
                    // The attempt takes its place in the budgets before bcrypt runs, so that
                    // attempts already in flight cannot slip past a budget about to be spent.
                    // It gives it back when dropped (right password, no room in the queue, or
                    // the client left) unless the password was wrong.
                    let attempt = self.limiter.attempt(client, username)?;
                    let verified = self
                        .verifier
                        .lead(flight, user, password, store.typical_cost())
                        .await;
                    match (verified, user) {
                        (Ok(true), Some(user)) => return Ok(user.clone()),
                        (Err(busy), _) => return Err(busy),
                        _ => {
                            attempt.failed();
                            return Err(bad_basic("wrong username or password"));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn basic(raw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    #[expect(clippy::too_many_lines, reason = "the table is the test")]
    fn credential_table() {
        let ok = |c: Credential| Ok::<_, (u16, bool)>(Some(c));
        let key = |k: &str| ok(Credential::ApiKey(k.into()));
        let cases: Vec<(
            &str,
            Vec<(&str, Vec<u8>)>,
            Result<Option<Credential>, (u16, bool)>,
        )> = vec![
            ("none", vec![], Ok(None)),
            (
                "argilla key",
                vec![("x-argilla-api-key", b"k1".to_vec())],
                key("k1"),
            ),
            (
                "rubrix key",
                vec![("x-rubrix-api-key", b"k2".to_vec())],
                key("k2"),
            ),
            (
                "argilla first",
                vec![
                    ("x-rubrix-api-key", b"k2".to_vec()),
                    ("x-argilla-api-key", b"k1".to_vec()),
                ],
                key("k1"),
            ),
            (
                "key beats authorization",
                vec![
                    ("authorization", b"Bearer t".to_vec()),
                    ("x-argilla-api-key", b"k1".to_vec()),
                ],
                key("k1"),
            ),
            (
                "empty key is absent",
                vec![
                    ("x-argilla-api-key", b"".to_vec()),
                    ("x-rubrix-api-key", b"k2".to_vec()),
                ],
                key("k2"),
            ),
            (
                "empty keys then basic",
                vec![
                    ("x-argilla-api-key", b"".to_vec()),
                    ("x-rubrix-api-key", b"".to_vec()),
                    ("authorization", basic("a:b").into_bytes()),
                ],
                ok(Credential::Basic {
                    username: "a".into(),
                    password: "b".into(),
                }),
            ),
            (
                "repeated same key",
                vec![
                    ("x-argilla-api-key", b"k1".to_vec()),
                    ("x-argilla-api-key", b"k1".to_vec()),
                ],
                key("k1"),
            ),
            (
                "repeated different keys",
                vec![
                    ("x-argilla-api-key", b"k1".to_vec()),
                    ("x-argilla-api-key", b"k2".to_vec()),
                ],
                Err((401, false)),
            ),
            (
                "non-ascii key",
                vec![("x-argilla-api-key", b"k\xff".to_vec())],
                Err((401, false)),
            ),
            (
                "bearer",
                vec![("authorization", b"Bearer tok".to_vec())],
                ok(Credential::Bearer("tok".into())),
            ),
            (
                "bearer lowercase",
                vec![("authorization", b"bearer tok".to_vec())],
                ok(Credential::Bearer("tok".into())),
            ),
            (
                "bearer two spaces keeps the space",
                vec![("authorization", b"Bearer  tok".to_vec())],
                ok(Credential::Bearer(" tok".into())),
            ),
            (
                "bearer without token",
                vec![("authorization", b"Bearer".to_vec())],
                Err((401, false)),
            ),
            (
                "basic",
                vec![("authorization", basic("alice:pw").into_bytes())],
                ok(Credential::Basic {
                    username: "alice".into(),
                    password: "pw".into(),
                }),
            ),
            (
                "basic lowercase",
                vec![(
                    "authorization",
                    basic("alice:pw").replace("Basic", "basic").into_bytes(),
                )],
                ok(Credential::Basic {
                    username: "alice".into(),
                    password: "pw".into(),
                }),
            ),
            (
                "basic colon in password",
                vec![("authorization", basic("alice:p:w").into_bytes())],
                ok(Credential::Basic {
                    username: "alice".into(),
                    password: "p:w".into(),
                }),
            ),
            (
                "basic empty password",
                vec![("authorization", basic("alice:").into_bytes())],
                ok(Credential::Basic {
                    username: "alice".into(),
                    password: String::new(),
                }),
            ),
            (
                "basic without colon",
                vec![("authorization", basic("alice").into_bytes())],
                Err((401, true)),
            ),
            (
                "basic empty username",
                vec![("authorization", basic(":pw").into_bytes())],
                Err((401, true)),
            ),
            (
                "basic bad base64",
                vec![("authorization", b"Basic !!!".to_vec())],
                Err((401, true)),
            ),
            (
                "basic not utf-8",
                vec![(
                    "authorization",
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(b"a\xff:b")
                    )
                    .into_bytes(),
                )],
                Err((401, true)),
            ),
            (
                "unknown scheme",
                vec![("authorization", b"Digest x".to_vec())],
                Err((401, false)),
            ),
            (
                "scheme only",
                vec![("authorization", b"Token".to_vec())],
                Err((401, false)),
            ),
        ];
        for (case, pairs, expected) in cases {
            let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let got = credential(&headers(&pairs)).map_err(|r| {
                let basic = matches!(r, Reject::Unauthenticated { basic: true, .. });
                (r.status().as_u16(), basic)
            });
            assert_eq!(got, expected, "{case}");
        }
    }
}
