//! From a checked sign-in to a users.yml user (pure: no I/O), and the post-login target check.
//! Only an existing, enabled user is ever chosen; nothing is created.

use std::sync::Arc;

use percent_encoding::percent_decode_str;

use super::config::{IdentityClaim, Oidc};
use crate::users::{User, UserStore};

/// What the provider said about the person (from the ID token, or from userinfo for the
/// claims the ID token lacks). `email` and `email_verified` always come from the same source.
#[derive(Debug, Clone, Default)]
pub struct Person {
    /// The provider's subject.
    pub sub: String,
    /// The e-mail address.
    pub email: Option<String>,
    /// `Some(true)` only for a JSON `true`; `Some(false)` for any other value; `None` when
    /// the provider sent no `email_verified` at all (Azure AD).
    pub email_verified: Option<bool>,
    /// The username at the provider.
    pub preferred_username: Option<String>,
}

impl Person {
    /// How the person is named on refusal pages and in the log.
    #[must_use]
    pub fn shown(&self) -> String {
        match (&self.email, &self.preferred_username) {
            (Some(email), _) => email.clone(),
            (None, Some(name)) => name.clone(),
            (None, None) => format!("subject {}", self.sub),
        }
    }
}

/// Why a signed-in person is not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The provider sent no usable value of the identity claim.
    #[error("the identity provider sent no {0} for this account")]
    NoClaim(&'static str),
    /// The e-mail address is not verified at the provider.
    #[error("the e-mail address {0} is not verified at the identity provider")]
    Unverified(String),
    /// Not a plain `local@domain` address.
    #[error("{0} is not a usable e-mail address")]
    BadEmail(String),
    /// The address's domain is not allowed.
    #[error("the e-mail domain of {0} is not allowed here")]
    Domain(String),
    /// No user in users.yml is this person.
    #[error("{0} is not a user of this Argilla")]
    Unknown(String),
    /// The user is `disabled: true`.
    #[error("the user {0} is disabled")]
    Disabled(String),
    /// Two users share the address (the load-time check prevents it; kept as a safety net).
    #[error("several users have the e-mail address {0}")]
    Ambiguous(String),
}

/// The user this person is, under `config`'s identity rule.
///
/// # Errors
/// Why the person is refused.
pub fn map(config: &Oidc, store: &UserStore, person: &Person) -> Result<Arc<User>, Refusal> {
    let user = match config.identity_claim {
        IdentityClaim::Email => {
            let email = person
                .email
                .as_deref()
                .filter(|e| !e.is_empty())
                .ok_or(Refusal::NoClaim("e-mail address"))?;
            if !verified(config, person) {
                return Err(Refusal::Unverified(email.to_owned()));
            }
            let domain = email_domain(email).ok_or_else(|| Refusal::BadEmail(email.to_owned()))?;
            if !config.allowed_email_domains.is_empty()
                && !config.allowed_email_domains.contains(&domain)
            {
                return Err(Refusal::Domain(email.to_owned()));
            }
            let wanted = email.to_lowercase();
            let mut found = store.users().filter(|u| {
                u.email
                    .as_deref()
                    .is_some_and(|mine| mine.to_lowercase() == wanted)
            });
            let user = found
                .next()
                .ok_or_else(|| Refusal::Unknown(email.to_owned()))?;
            if found.next().is_some() {
                return Err(Refusal::Ambiguous(email.to_owned()));
            }
            user.clone()
        }
        IdentityClaim::PreferredUsername => {
            let name = person
                .preferred_username
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or(Refusal::NoClaim("preferred_username"))?;
            if !config.allowed_email_domains.is_empty() {
                let email = person
                    .email
                    .as_deref()
                    .ok_or(Refusal::NoClaim("e-mail address"))?;
                if !verified(config, person) {
                    return Err(Refusal::Unverified(email.to_owned()));
                }
                let domain =
                    email_domain(email).ok_or_else(|| Refusal::BadEmail(email.to_owned()))?;
                if !config.allowed_email_domains.contains(&domain) {
                    return Err(Refusal::Domain(email.to_owned()));
                }
            }
            store
                .by_name(name)
                .cloned()
                .ok_or_else(|| Refusal::Unknown(name.to_owned()))?
        }
    };
    if user.is_disabled() {
        return Err(Refusal::Disabled(user.username.clone()));
    }
    Ok(user)
}

/// Whether the person's e-mail counts as verified: `email_verified: true`, or no
/// `email_verified` at all where `oidc.allow_missing_email_verified` says the provider's
/// addresses are its own (the allowed domains are then required, and checked by the caller).
fn verified(config: &Oidc, person: &Person) -> bool {
    match person.email_verified {
        Some(verified) => verified,
        None => config.allow_missing_email_verified && !config.allowed_email_domains.is_empty(),
    }
}

/// The lower-case domain of a plain address: exactly one `@`, something on both sides, no
/// whitespace or control characters (`a@evil@company.com` is refused, not split).
#[must_use]
pub fn email_domain(email: &str) -> Option<String> {
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(domain.to_lowercase())
}

/// The users that share an e-mail address (case-insensitively), as one message per address:
/// refused at load while SSO maps by e-mail.
#[must_use]
pub fn duplicate_emails(store: &UserStore) -> Vec<String> {
    let mut seen: std::collections::HashMap<String, Vec<&str>> = std::collections::HashMap::new();
    for user in store.users() {
        if let Some(email) = &user.email {
            seen.entry(email.to_lowercase())
                .or_default()
                .push(&user.username);
        }
    }
    let mut problems: Vec<String> = seen
        .into_iter()
        .filter(|(_, users)| users.len() > 1)
        .map(|(email, mut users)| {
            users.sort_unstable();
            format!(
                "users {} share the e-mail address {email}: single sign-on maps people by \
                 e-mail (oidc.identity_claim), so each address must belong to one user",
                users.join(", ")
            )
        })
        .collect();
    problems.sort();
    problems
}

/// The longest post-login target kept.
const MAX_TARGET: usize = 2048;

/// `target` when it is a path on this site, else `None`: it must start with one `/`, and no
/// form of it, decoded up to three times, may start with `//` or `/\`, hold a backslash, a
/// control character (browsers drop tabs and newlines from URLs) or a dot segment; as sent, it
/// is ASCII without spaces.
#[must_use]
pub fn safe_target(target: &str) -> Option<&str> {
    if target.is_empty() || target.len() > MAX_TARGET || !target.is_ascii() {
        return None;
    }
    if target.contains(char::is_whitespace) {
        return None;
    }
    let mut form = target.to_owned();
    for _ in 0..4 {
        if !plain_path(&form) {
            return None;
        }
        let decoded = percent_decode_str(&form).decode_utf8().ok()?.into_owned();
        if decoded == form {
            break;
        }
        form = decoded;
    }
    // Also what an HTTP client must find in a header value.
    http::HeaderValue::from_str(target).ok()?;
    Some(target)
}

fn plain_path(form: &str) -> bool {
    let path = form.split(['?', '#']).next().unwrap_or(form);
    form.starts_with('/')
        && !form.starts_with("//")
        && !form.contains('\\')
        && !form.chars().any(char::is_control)
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn targets() {
        let cases: &[(&str, bool)] = &[
            ("/", true),
            ("/datasets", true),
            ("/datasets/team-a/ds?tab=1#x", true),
            ("/a%20b", true),
            ("", false),
            ("datasets", false),
            ("//evil.test", false),
            ("//evil.test/datasets", false),
            ("/\\evil.test", false),
            ("/%2F%2Fevil.test", false),
            ("%2F%2Fevil.test", false),
            ("/%5Cevil.test", false),
            ("/%255Cevil.test", false),
            ("https://evil.test", false),
            ("javascript:alert(1)", false),
            ("/ /evil.test", false),
            ("/\t/evil.test", false),
            ("/../evil", false),
            ("/%2e%2e/x", false),
            ("/datasets/\u{e9}", false),
        ];
        for (target, ok) in cases {
            assert_eq!(safe_target(target).is_some(), *ok, "{target:?}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            email_domain("a@Example.COM").as_deref(),
            Some("example.com")
        );
        for bad in ["a@evil@company.com", "@x", "a@", "a b@x", "nope"] {
            assert_eq!(email_domain(bad), None, "{bad}");
        }
    }

    fn oidc(claim: IdentityClaim, domains: &[&str]) -> Oidc {
        Oidc {
            issuer: "https://idp".into(),
            client_id: "c".into(),
            client_secret: None,
            redirect_url: "https://gw/oauth2/callback".parse().unwrap(),
            scopes: vec!["openid".into()],
            identity_claim: claim,
            allowed_email_domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            password_login: true,
            session_lifetime: std::time::Duration::from_secs(60),
            state_dir: None,
            post_logout_redirect_url: None,
            ca_file: None,
            allow_missing_email_verified: false,
        }
    }

    #[test]
    fn mapping_table() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let yaml = format!(
            "- username: alice\n  hashed_password: '{hash}'\n  api_key: k1\n  email: Alice@Example.com\n\
             - username: dave\n  hashed_password: '{hash}'\n  api_key: k2\n  email: dave@example.com\n  disabled: true\n"
        );
        let store = UserStore::parse(Path::new("u.yml"), yaml.as_bytes()).unwrap();
        let person = |email: &str, verified: bool, name: &str| Person {
            sub: "s".into(),
            email: (!email.is_empty()).then(|| email.to_owned()),
            email_verified: Some(verified),
            preferred_username: (!name.is_empty()).then(|| name.to_owned()),
        };
        let email = oidc(IdentityClaim::Email, &["example.com"]);
        let username = oidc(IdentityClaim::PreferredUsername, &[]);
        let cases: &[(&str, &Oidc, Person, Result<&str, Refusal>)] = &[
            (
                "verified, other case",
                &email,
                person("alice@example.COM", true, ""),
                Ok("alice"),
            ),
            (
                "unverified copy",
                &email,
                person("alice@example.com", false, ""),
                Err(Refusal::Unverified("alice@example.com".into())),
            ),
            (
                "two @",
                &email,
                person("alice@example.com@evil.test", true, ""),
                Err(Refusal::BadEmail("alice@example.com@evil.test".into())),
            ),
            (
                "other domain",
                &email,
                person("alice@evil.test", true, ""),
                Err(Refusal::Domain("alice@evil.test".into())),
            ),
            (
                "unknown",
                &email,
                person("zoe@example.com", true, ""),
                Err(Refusal::Unknown("zoe@example.com".into())),
            ),
            (
                "disabled",
                &email,
                person("dave@example.com", true, ""),
                Err(Refusal::Disabled("dave".into())),
            ),
            (
                "no e-mail",
                &email,
                person("", true, "alice"),
                Err(Refusal::NoClaim("e-mail address")),
            ),
            (
                "username",
                &username,
                person("", false, "alice"),
                Ok("alice"),
            ),
            (
                "username is exact",
                &username,
                person("", false, "Alice"),
                Err(Refusal::Unknown("Alice".into())),
            ),
        ];
        for (case, config, person, expected) in cases {
            let got = map(config, &store, person).map(|u| u.username.clone());
            assert_eq!(got, expected.clone().map(str::to_owned), "{case}");
        }
        // Azure AD: no `email_verified` at all, accepted only where the operator says so.
        let mut missing = person("alice@example.com", true, "");
        missing.email_verified = None;
        assert_eq!(
            map(&email, &store, &missing).map(|u| u.username.clone()),
            Err(Refusal::Unverified("alice@example.com".into()))
        );
        let mut azure = oidc(IdentityClaim::Email, &["example.com"]);
        azure.allow_missing_email_verified = true;
        assert_eq!(map(&azure, &store, &missing).unwrap().username, "alice");
        let unverified = person("alice@example.com", false, "");
        assert!(
            map(&azure, &store, &unverified).is_err(),
            "false is still false"
        );
    }

    #[test]
    fn duplicate_addresses_are_named() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let yaml = format!(
            "- username: a\n  hashed_password: '{hash}'\n  api_key: k1\n  email: X@y.org\n\
             - username: b\n  hashed_password: '{hash}'\n  api_key: k2\n  email: x@Y.org\n"
        );
        let store = UserStore::parse(Path::new("u.yml"), yaml.as_bytes()).unwrap();
        let problems = duplicate_emails(&store);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("a, b"), "{problems:?}");
    }
}
