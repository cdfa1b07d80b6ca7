//! The `[oidc]` section of `gateway.toml` and its `ARGILLA_GATEWAY_OIDC_*` variables: the
//! environment beats the file. Setting `issuer_url` turns single sign-on on.

use std::{path::PathBuf, time::Duration};

use http::Uri;
use serde::Deserialize;

use crate::error::Error;

/// `[oidc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    issuer_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    redirect_url: Option<String>,
    scopes: Option<Vec<String>>,
    identity_claim: Option<String>,
    allowed_email_domains: Option<Vec<String>>,
    password_login: Option<bool>,
    session_lifetime_minutes: Option<u64>,
    state_dir: Option<String>,
    post_logout_redirect_url: Option<String>,
    ca_file: Option<String>,
    allow_missing_email_verified: Option<bool>,
}

/// Which claim names the person, and which users.yml field it is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityClaim {
    /// `email` (only with `email_verified: true`) against `email`, case-insensitively.
    Email,
    /// `preferred_username` against `username`, exactly.
    PreferredUsername,
}

/// Single sign-on settings, validated.
#[derive(Debug, Clone)]
pub struct Oidc {
    /// The issuer, exactly as the provider names itself (`iss`).
    pub issuer: String,
    /// The client registered for the gateway.
    pub client_id: String,
    /// Its secret; `None` for a public client.
    pub client_secret: Option<String>,
    /// The public `.../oauth2/callback` URL registered at the provider.
    pub redirect_url: Uri,
    /// Scopes asked for; always includes `openid`.
    pub scopes: Vec<String>,
    /// How a person is found in users.yml.
    pub identity_claim: IdentityClaim,
    /// E-mail domains allowed, lower-case; empty: any.
    pub allowed_email_domains: Vec<String>,
    /// Whether `POST /api/security/token` (the web app's password form) stays available.
    pub password_login: bool,
    /// How long a gateway token issued at an SSO login lives.
    pub session_lifetime: Duration,
    /// Where ended sessions are remembered across restarts.
    pub state_dir: Option<PathBuf>,
    /// Where the provider sends the browser after its own sign-out.
    pub post_logout_redirect_url: Option<String>,
    /// Extra trusted CA certificates (PEM) for an `https` provider.
    pub ca_file: Option<PathBuf>,
    /// Accept an e-mail with no `email_verified` claim at all (Azure AD sends none), within the
    /// allowed domains only. An `email_verified` that is not `true` is refused still.
    pub allow_missing_email_verified: bool,
}

impl Oidc {
    /// Whether the browser reaches the gateway over https (cookies get `Secure`).
    #[must_use]
    pub fn secure(&self) -> bool {
        self.redirect_url.scheme_str() == Some("https")
    }
}

fn is_loopback(uri: &Uri) -> bool {
    matches!(
        uri.host(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    )
}

fn list(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Builds the settings from `[oidc]` and the environment; `None` when `issuer_url` is unset.
/// `has_secret_key`: whether gateway tokens outlive a restart (then ended sessions must too,
/// so `state_dir` is required).
///
/// # Errors
/// A missing or invalid setting, named.
#[expect(clippy::too_many_lines, reason = "one block per setting reads best")]
pub fn from_raw(
    raw: RawOidc,
    env: &dyn Fn(&str) -> Option<String>,
    has_secret_key: bool,
) -> Result<Option<Oidc>, Error> {
    let pick = |var: &str, file: Option<String>| -> Option<String> {
        env(var).filter(|v| !v.trim().is_empty()).or(file)
    };
    let bad = |what: &str, why: &str| Error::Config(format!("oidc.{what}: {why}"));
    let Some(issuer) = pick("ARGILLA_GATEWAY_OIDC_ISSUER_URL", raw.issuer_url) else {
        return Ok(None);
    };
    let issuer = issuer.trim().to_owned();
    let issuer_uri: Uri = issuer.parse().map_err(|e| {
        bad(
            "issuer_url (ARGILLA_GATEWAY_OIDC_ISSUER_URL)",
            &format!("{e}"),
        )
    })?;
    check_url("issuer_url (ARGILLA_GATEWAY_OIDC_ISSUER_URL)", &issuer_uri)?;
    let client_id = pick("ARGILLA_GATEWAY_OIDC_CLIENT_ID", raw.client_id).ok_or_else(|| {
        bad(
            "client_id (ARGILLA_GATEWAY_OIDC_CLIENT_ID)",
            "required with issuer_url",
        )
    })?;
    let client_secret = pick("ARGILLA_GATEWAY_OIDC_CLIENT_SECRET", raw.client_secret);
    let redirect_text =
        pick("ARGILLA_GATEWAY_OIDC_REDIRECT_URL", raw.redirect_url).ok_or_else(|| {
            bad(
                "redirect_url (ARGILLA_GATEWAY_OIDC_REDIRECT_URL)",
                "required with issuer_url: the public https://…/oauth2/callback",
            )
        })?;
    let redirect_url: Uri = redirect_text.trim().parse().map_err(|e| {
        bad(
            "redirect_url (ARGILLA_GATEWAY_OIDC_REDIRECT_URL)",
            &format!("{e}"),
        )
    })?;
    check_url(
        "redirect_url (ARGILLA_GATEWAY_OIDC_REDIRECT_URL)",
        &redirect_url,
    )?;
    if redirect_url.path() != "/oauth2/callback" {
        return Err(bad(
            "redirect_url (ARGILLA_GATEWAY_OIDC_REDIRECT_URL)",
            "must end in /oauth2/callback, the gateway's callback path",
        ));
    }
    let mut scopes = pick(
        "ARGILLA_GATEWAY_OIDC_SCOPES",
        raw.scopes.map(|s| s.join(" ")),
    )
    .map_or_else(
        || vec!["openid".into(), "email".into(), "profile".into()],
        |s| list(&s),
    );
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let identity_claim = match pick("ARGILLA_GATEWAY_OIDC_IDENTITY_CLAIM", raw.identity_claim)
        .as_deref()
        .map(str::trim)
    {
        None | Some("email") => IdentityClaim::Email,
        Some("preferred_username") => IdentityClaim::PreferredUsername,
        Some(other) => {
            return Err(bad(
                "identity_claim (ARGILLA_GATEWAY_OIDC_IDENTITY_CLAIM)",
                &format!("must be `email` or `preferred_username`, got {other:?}"),
            ));
        }
    };
    let allowed_email_domains: Vec<String> = pick(
        "ARGILLA_GATEWAY_OIDC_ALLOWED_EMAIL_DOMAINS",
        raw.allowed_email_domains.map(|d| d.join(",")),
    )
    .map(|s| list(&s))
    .unwrap_or_default()
    .into_iter()
    .map(|d| d.trim_start_matches('@').to_lowercase())
    .collect();
    if allowed_email_domains.iter().any(|d| d.contains('@')) {
        return Err(bad(
            "allowed_email_domains (ARGILLA_GATEWAY_OIDC_ALLOWED_EMAIL_DOMAINS)",
            "domains only, like example.com",
        ));
    }
    let password_login = parse_bool(
        "password_login (ARGILLA_GATEWAY_OIDC_PASSWORD_LOGIN)",
        pick(
            "ARGILLA_GATEWAY_OIDC_PASSWORD_LOGIN",
            raw.password_login.map(|b| b.to_string()),
        )
        .as_deref(),
        true,
    )?;
    let minutes = match pick(
        "ARGILLA_GATEWAY_OIDC_SESSION_LIFETIME_MINUTES",
        raw.session_lifetime_minutes.map(|m| m.to_string()),
    ) {
        None => 480,
        Some(text) => text.trim().parse::<u64>().map_err(|e| {
            bad(
                "session_lifetime_minutes (ARGILLA_GATEWAY_OIDC_SESSION_LIFETIME_MINUTES)",
                &e.to_string(),
            )
        })?,
    };
    if minutes == 0 {
        return Err(bad(
            "session_lifetime_minutes (ARGILLA_GATEWAY_OIDC_SESSION_LIFETIME_MINUTES)",
            "must be at least 1",
        ));
    }
    let state_dir = pick("ARGILLA_GATEWAY_OIDC_STATE_DIR", raw.state_dir).map(PathBuf::from);
    if has_secret_key && state_dir.is_none() {
        return Err(bad(
            "state_dir (ARGILLA_GATEWAY_OIDC_STATE_DIR)",
            "required with auth.secret_key: signed-out SSO sessions are remembered there, so \
             that their tokens stay refused after a restart",
        ));
    }
    let post_logout_redirect_url = pick(
        "ARGILLA_GATEWAY_OIDC_POST_LOGOUT_REDIRECT_URL",
        raw.post_logout_redirect_url,
    );
    let ca_file = pick("ARGILLA_GATEWAY_OIDC_CA_FILE", raw.ca_file).map(PathBuf::from);
    let allow_missing_email_verified = parse_bool(
        "allow_missing_email_verified (ARGILLA_GATEWAY_OIDC_ALLOW_MISSING_EMAIL_VERIFIED)",
        pick(
            "ARGILLA_GATEWAY_OIDC_ALLOW_MISSING_EMAIL_VERIFIED",
            raw.allow_missing_email_verified.map(|b| b.to_string()),
        )
        .as_deref(),
        false,
    )?;
    if allow_missing_email_verified && allowed_email_domains.is_empty() {
        return Err(bad(
            "allow_missing_email_verified (ARGILLA_GATEWAY_OIDC_ALLOW_MISSING_EMAIL_VERIFIED)",
            "needs allowed_email_domains: only addresses in domains the provider owns may go \
             without email_verified",
        ));
    }
    Ok(Some(Oidc {
        issuer,
        client_id,
        client_secret,
        redirect_url,
        scopes,
        identity_claim,
        allowed_email_domains,
        password_login,
        session_lifetime: Duration::from_secs(minutes.saturating_mul(60)),
        state_dir,
        post_logout_redirect_url,
        ca_file,
        allow_missing_email_verified,
    }))
}

fn parse_bool(what: &str, value: Option<&str>, default: bool) -> Result<bool, Error> {
    match value.map(str::trim) {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(Error::Config(format!(
            "oidc.{what}: must be true or false, got {other:?}"
        ))),
    }
}

/// `https`, or `http` on the loopback only (a provider's keys fetched over plain http from
/// another host could be anyone's).
fn check_url(what: &str, uri: &Uri) -> Result<(), Error> {
    let ok = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => is_loopback(uri),
        _ => false,
    };
    if !ok || uri.host().is_none() || uri.query().is_some() {
        return Err(Error::Config(format!(
            "oidc.{what}: must be an https:// URL without a query (http:// only on localhost), \
             got {uri}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(toml: &str, vars: &[(&str, &str)], secret: bool) -> Result<Option<Oidc>, String> {
        let raw: RawOidc = toml::from_str(toml).map_err(|e| e.to_string())?;
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        from_raw(raw, &move |n| env.get(n).cloned(), secret).map_err(|e| e.to_string())
    }

    const BASE: &str = "issuer_url = \"https://idp.example.com/realms/r\"\nclient_id = \"gw\"\n\
                        redirect_url = \"https://argilla.example.com/oauth2/callback\"\n";

    #[test]
    fn off_without_issuer_and_defaults_with_it() {
        assert!(parse("", &[], false).unwrap().is_none());
        let oidc = parse(BASE, &[], false).unwrap().unwrap();
        assert_eq!(oidc.scopes, ["openid", "email", "profile"]);
        assert_eq!(oidc.identity_claim, IdentityClaim::Email);
        assert!(oidc.password_login);
        assert_eq!(oidc.session_lifetime, Duration::from_secs(8 * 3600));
        assert!(oidc.secure());
        let from_env = parse(
            "",
            &[
                ("ARGILLA_GATEWAY_OIDC_ISSUER_URL", "http://127.0.0.1:9/x"),
                ("ARGILLA_GATEWAY_OIDC_CLIENT_ID", "c"),
                (
                    "ARGILLA_GATEWAY_OIDC_REDIRECT_URL",
                    "http://127.0.0.1:6900/oauth2/callback",
                ),
                (
                    "ARGILLA_GATEWAY_OIDC_ALLOWED_EMAIL_DOMAINS",
                    "Example.com, @b.org",
                ),
                ("ARGILLA_GATEWAY_OIDC_PASSWORD_LOGIN", "false"),
                ("ARGILLA_GATEWAY_OIDC_SCOPES", "email groups"),
            ],
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(from_env.allowed_email_domains, ["example.com", "b.org"]);
        assert!(!from_env.password_login);
        assert_eq!(from_env.scopes, ["openid", "email", "groups"]);
        assert!(!from_env.secure());
    }

    #[test]
    fn rules() {
        let cases: &[(&str, &str, bool, &str)] = &[
            (
                "http issuer elsewhere than localhost",
                "issuer_url = \"http://idp.example.com\"\nclient_id = \"gw\"\nredirect_url = \"https://a/oauth2/callback\"",
                false,
                "https://",
            ),
            (
                "no client id",
                "issuer_url = \"https://idp\"\nredirect_url = \"https://a/oauth2/callback\"",
                false,
                "client_id",
            ),
            (
                "no redirect",
                "issuer_url = \"https://idp\"\nclient_id = \"gw\"",
                false,
                "redirect_url",
            ),
            (
                "redirect elsewhere",
                "issuer_url = \"https://idp\"\nclient_id = \"gw\"\nredirect_url = \"https://a/callback\"",
                false,
                "/oauth2/callback",
            ),
            (
                "unknown claim",
                &format!("{BASE}identity_claim = \"sub\""),
                false,
                "identity_claim",
            ),
            ("secret key without state dir", BASE, true, "state_dir"),
            (
                "zero lifetime",
                &format!("{BASE}session_lifetime_minutes = 0"),
                false,
                "at least 1",
            ),
            (
                "typo",
                &format!("{BASE}client_secrett = \"x\""),
                false,
                "unknown field",
            ),
        ];
        for (case, toml, secret, expected) in cases {
            let error = parse(toml, &[], *secret).unwrap_err();
            assert!(error.contains(expected), "{case}: {error}");
        }
    }
}
