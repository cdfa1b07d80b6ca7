//! The few HTTP calls the gateway makes to the identity provider (discovery, JWKS, token
//! endpoint, userinfo): one hyper connection per call, `https` through rustls with the Mozilla
//! roots (plus an operator's CA file), `http` for a provider on the loopback. They are rare
//! (a login, a key rotation), so there is no pool. Answers are size- and time-bounded.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Largest answer read from the provider (discovery documents and key sets are a few KiB).
const MAX_ANSWER: usize = 1024 * 1024;
/// Time for one call, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for the provider's endpoints.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
}

/// Why a call failed. Never carries a token, code or secret.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection, TLS failure, timeout.
    #[error("{0}")]
    Transport(String),
    /// The provider answered with an error status.
    #[error("status {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the answer (OAuth error JSON: `error`, `error_description`).
        body: String,
    },
    /// The answer is not the JSON expected.
    #[error("unexpected answer: {0}")]
    Body(String),
}

impl Client {
    /// A client trusting the Mozilla roots and, when given, the certificates of `ca_file`.
    ///
    /// # Errors
    /// The CA file cannot be read or holds no certificate.
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            use rustls_pki_types::pem::PemObject as _;
            let mut added = 0;
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("oidc.ca_file {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("oidc.ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("oidc.ca_file {}: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!(
                    "oidc.ca_file {}: no certificate in it",
                    path.display()
                ));
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// `GET uri`, expecting JSON.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn get_json(
        &self,
        uri: &Uri,
        bearer: Option<&str>,
    ) -> Result<serde_json::Value, CallError> {
        let mut request = Request::get(uri.clone()).header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.call(request, Bytes::new()).await
    }

    /// `POST uri` with a form body, expecting JSON.
    ///
    /// # Errors
    /// See [`CallError`].
    pub async fn post_form(
        &self,
        uri: &Uri,
        form: &[(&str, &str)],
        basic: Option<&str>,
    ) -> Result<serde_json::Value, CallError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = Request::post(uri.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(basic) = basic {
            request = request.header(header::AUTHORIZATION, basic);
        }
        self.call(request, Bytes::from(body)).await
    }

    async fn call(
        &self,
        request: http::request::Builder,
        body: Bytes,
    ) -> Result<serde_json::Value, CallError> {
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(request, body))
            .await
            .map_err(|_| CallError::Transport(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    async fn exchange(
        &self,
        request: http::request::Builder,
        body: Bytes,
    ) -> Result<serde_json::Value, CallError> {
        let transport = |e: &dyn std::fmt::Display| CallError::Transport(e.to_string());
        let uri = request
            .uri_ref()
            .cloned()
            .ok_or_else(|| CallError::Transport("no URI".into()))?;
        let host = uri
            .host()
            .ok_or_else(|| CallError::Transport("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let request = request
            .uri(path)
            .header(header::HOST, authority)
            .header(header::USER_AGENT, "argilla-gateway")
            .body(Full::new(body))
            .map_err(|e| transport(&e))?;
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| transport(&e))?;
        let response = if https {
            let name = rustls_pki_types::ServerName::try_from(host).map_err(|e| transport(&e))?;
            let stream = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|e| transport(&e))?;
            send(TokioIo::new(stream), request).await?
        } else {
            send(TokioIo::new(stream), request).await?
        };
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(CallError::Status { status, body: text });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Body(e.to_string()))
    }
}

async fn send<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, CallError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| CallError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| CallError::Transport(e.to_string()))
}
