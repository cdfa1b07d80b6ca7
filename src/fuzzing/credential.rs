//! The credential parser: any header lines → one credential, none, or a refusal; never a panic.
//! What it returns is what the first present, non-empty header said, in Argilla's order.

use crate::auth::{Credential, credential};
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};

const NAMES: [&str; 6] = [
    "x-argilla-api-key",
    "x-rubrix-api-key",
    "authorization",
    "X-Argilla-Api-Key",
    "cookie",
    "proxy-authorization",
];

/// Runs one input through the properties above; panics when one breaks.
pub fn check(data: &[u8]) {
    // Lines of `<name selector byte><value bytes>`, separated by '\n'.
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        let name = HeaderName::from_bytes(NAMES[usize::from(selector) % NAMES.len()].as_bytes())
            .expect("static names are valid");
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let first = |name: &str| -> Option<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| !v.is_empty())
            .map(str::to_owned)
    };
    match credential(&headers) {
        Ok(None) => {
            for name in ["x-argilla-api-key", "x-rubrix-api-key", "authorization"] {
                assert!(first(name).is_none(), "{name} was present but ignored");
            }
        }
        Ok(Some(Credential::ApiKey(key))) => {
            assert!(!key.is_empty());
            let expected = first("x-argilla-api-key").or_else(|| first("x-rubrix-api-key"));
            assert_eq!(Some(key), expected, "not the first present key header");
        }
        Ok(Some(Credential::Bearer(token))) => {
            assert!(!token.is_empty());
            assert!(first("x-argilla-api-key").is_none() && first("x-rubrix-api-key").is_none());
            let header = first("authorization").expect("bearer without authorization");
            assert!(header[..6].eq_ignore_ascii_case("bearer"));
            assert_eq!(&header[7..], token);
        }
        Ok(Some(Credential::Basic { username, password })) => {
            assert!(first("x-argilla-api-key").is_none() && first("x-rubrix-api-key").is_none());
            assert!(!username.is_empty() && !username.contains(':'));
            let header = first("authorization").expect("basic without authorization");
            let (_, encoded) = header.split_once(' ').expect("basic without a space");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .expect("basic accepted invalid base64");
            assert_eq!(decoded, format!("{username}:{password}").into_bytes());
        }
        Err(reject) => {
            assert_eq!(
                reject.status(),
                401,
                "a credential refusal that is not a 401"
            );
        }
    }
}
