//! A blocking client for the OCI distribution API (v2): manifests and blobs of one
//! repository, with token/Basic authentication, retries and resumable blob downloads.

pub mod auth;
pub mod transport;

use std::io::{self, Read};
use std::sync::Mutex;

use ureq::http::Response;
use ureq::Body;

use self::auth::{Challenge, Credentials};
use super::digest::Digest;
use super::manifest;
use super::reference::Reference;
use crate::{err, Context, Error, Result};

/// How requests are currently authorised.
#[derive(Clone)]
enum AuthState {
    None,
    Basic(String),
    Bearer(String),
}

/// A connection to one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    repository: String,
    /// The image as the user wrote it, for error messages.
    image: String,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
}

/// A fetched manifest: its bytes (hash these for the digest) and the declared content type.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub digest: Digest,
}

impl Client {
    pub fn new(reference: &Reference, image: &str) -> Result<Client> {
        let host = reference.api_host();
        let agent = transport::agent_for(host);
        Ok(Client {
            base: transport::base_url(&agent, host)
                .map_err(|e| err!("image {image}: {}", e.message()))?,
            agent,
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            image: image.to_string(),
            creds: auth::credentials_for(&reference.registry)?,
            auth: Mutex::new(AuthState::None),
        })
    }

    /// GET a manifest by tag or digest. The digest is computed from the bytes received;
    /// when `reference` is a digest it must match.
    pub fn manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let resp = self.get(&path, manifest::ACCEPT, 0, || {
            format!("manifest `{reference}`")
        })?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut bytes = Vec::new();
        resp.into_body()
            .into_with_config()
            .limit(manifest::MAX_MANIFEST_BYTES)
            .reader()
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading manifest of image {}", self.image))?;
        let digest = Digest::of(&bytes);
        if reference.starts_with("sha256:") && digest.to_string() != reference {
            return Err(err!(
                "manifest of image {} does not match its digest: expected {reference}, got {digest}",
                self.image
            ));
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// A reader over blob `digest` (`size` bytes) that re-requests the rest of the blob
    /// (with `Range`) when the connection drops. It does not verify the content: wrap it in
    /// a [`super::digest::VerifyingReader`].
    pub fn blob(&self, digest: &Digest, size: u64) -> BlobReader<'_> {
        BlobReader {
            client: self,
            digest: digest.clone(),
            size,
            pos: 0,
            body: None,
            failures: 0,
        }
    }

    fn what(&self) -> String {
        format!("image {}", self.image)
    }

    /// Send a GET with authentication, retrying transient failures. `what` names the object
    /// for errors. Returns only 200/206 responses.
    fn get(
        &self,
        path: &str,
        accept: &str,
        range_from: u64,
        what: impl Fn() -> String,
    ) -> Result<Response<Body>> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let mut req = self
                .agent
                .get(&url)
                .header("Accept", accept)
                .header("Accept-Encoding", "identity");
            if range_from > 0 {
                req = req.header("Range", format!("bytes={range_from}-"));
            }
            match self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                AuthState::None => {}
                AuthState::Basic(h) | AuthState::Bearer(h) => {
                    req = req.header("Authorization", h);
                }
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(e) if transport::is_transient(&e) && attempt < transport::MAX_ATTEMPTS => {
                    std::thread::sleep(transport::backoff(attempt));
                    continue;
                }
                Err(e) => return Err(self.transport_error(&e, &what())),
            };
            let status = resp.status().as_u16();
            match status {
                200 | 206 => return Ok(resp),
                401 if !reauthenticated => {
                    reauthenticated = true;
                    let header = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    self.authenticate(&header)?;
                    attempt = 0;
                }
                401 | 403 => {
                    return Err(err!(
                        "registry {} denied access to {} of {} (HTTP {status}; tried {})",
                        self.registry,
                        what(),
                        self.what(),
                        self.tried()
                    ))
                }
                404 => {
                    return Err(err!(
                        "{} not found in registry {} for {}",
                        what(),
                        self.registry,
                        self.what()
                    ))
                }
                429 | 500..=599 if attempt < transport::MAX_ATTEMPTS => {
                    std::thread::sleep(transport::backoff(attempt));
                }
                _ => {
                    return Err(err!(
                        "registry {} answered HTTP {status} for {} of {}",
                        self.registry,
                        what(),
                        self.what()
                    ))
                }
            }
        }
    }

    fn tried(&self) -> String {
        match &self.creds {
            Some(c) => format!("user `{}` from {}", c.username, c.source),
            None => format!(
                "anonymous access; no credentials for {} in III_REGISTRY_AUTH or docker config.json",
                self.registry
            ),
        }
    }

    fn transport_error(&self, e: &ureq::Error, what: &str) -> Error {
        let why = match e {
            ureq::Error::HostNotFound => "unknown host".to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            other => other.to_string(),
        };
        err!(
            "cannot reach registry {} ({}) for {what} of {}: {why}",
            self.registry,
            self.base,
            self.what()
        )
    }

    /// Answer a 401 challenge: fetch a bearer token, or switch to Basic credentials.
    fn authenticate(&self, header: &str) -> Result<()> {
        let challenge = auth::parse_challenge(header);
        let state = match challenge {
            Some(c) if c.scheme == "bearer" => AuthState::Bearer(self.fetch_token(&c)?),
            Some(c) if c.scheme == "basic" => match &self.creds {
                Some(creds) => AuthState::Basic(creds.basic_header()),
                None => {
                    return Err(err!(
                        "registry {} requires a login for {} ({})",
                        self.registry,
                        self.what(),
                        self.tried()
                    ))
                }
            },
            _ => {
                return Err(err!(
                    "registry {} requires authentication for {} but sent no usable challenge (`{header}`)",
                    self.registry,
                    self.what()
                ))
            }
        };
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    fn fetch_token(&self, c: &Challenge) -> Result<String> {
        let realm = c.params.get("realm").with_context(|| {
            format!(
                "registry {} sent a bearer challenge without a realm",
                self.registry
            )
        })?;
        let scope = format!("repository:{}:pull", self.repository);
        let mut url = format!("{realm}{}", if realm.contains('?') { '&' } else { '?' });
        if let Some(service) = c.params.get("service") {
            url.push_str(&format!("service={}&", query_escape(service)));
        }
        url.push_str(&format!("scope={}", query_escape(&scope)));
        let token_host = realm
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let agent = transport::agent_for(token_host);
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let mut req = agent.get(&url);
            if let Some(creds) = &self.creds {
                req = req.header("Authorization", creds.basic_header());
            }
            match req.call() {
                Ok(r) if r.status().is_server_error() && attempt < transport::MAX_ATTEMPTS => {}
                Ok(r) => break r,
                Err(e) if transport::is_transient(&e) && attempt < transport::MAX_ATTEMPTS => {}
                Err(e) => {
                    return Err(err!(
                        "cannot reach token service {realm} of registry {} for {}: {e}",
                        self.registry,
                        self.what()
                    ))
                }
            }
            std::thread::sleep(transport::backoff(attempt));
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(err!(
                "token service {realm} refused a pull token for {} (HTTP {status}; tried {})",
                self.what(),
                self.tried()
            ));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_with_config()
            .limit(1 << 20)
            .reader()
            .read_to_end(&mut body)
            .with_context(|| format!("reading token from {realm}"))?;
        let t: TokenResponse = serde_json::from_slice(&body)
            .with_context(|| format!("token service {realm} sent invalid JSON"))?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .with_context(|| format!("token service {realm} sent no token"))?;
        Ok(format!("Bearer {token}"))
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass through).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Streams one blob, resuming after a dropped connection or a short body.
pub struct BlobReader<'a> {
    client: &'a Client,
    digest: Digest,
    size: u64,
    pos: u64,
    body: Option<ureq::BodyReader<'static>>,
    failures: u32,
}

impl BlobReader<'_> {
    fn open(&mut self) -> Result<()> {
        let path = format!("/v2/{}/blobs/{}", self.client.repository, self.digest);
        let digest = self.digest.clone();
        let resp = self
            .client
            .get(&path, "*/*", self.pos, || format!("blob {digest}"))?;
        let partial = resp.status().as_u16() == 206;
        let mut body = resp.into_body().into_with_config().limit(u64::MAX).reader();
        if self.pos > 0 && !partial {
            // The server ignored Range: skip what we already passed on.
            let skipped = io::copy(&mut (&mut body).take(self.pos), &mut io::sink())
                .map_err(|e| err!("re-reading blob {}: {e}", self.digest))?;
            if skipped < self.pos {
                return Err(err!("blob {} got shorter on retry", self.digest));
            }
        }
        self.body = Some(body);
        Ok(())
    }

    fn fail(&mut self, e: io::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if self.failures >= transport::MAX_ATTEMPTS {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "downloading blob {} of image {}: {e} (gave up after {} attempts at byte {})",
                    self.digest, self.client.image, self.failures, self.pos
                ),
            ));
        }
        std::thread::sleep(transport::backoff(self.failures));
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.body.is_none() {
                self.open().map_err(|e| io::Error::other(e.to_string()))?;
            }
            let body = self.body.as_mut().expect("opened above");
            match body.read(buf) {
                Ok(0) if self.pos < self.size => {
                    self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed at byte {} of {}", self.pos, self.size),
                    ))?;
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(e)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_escaping() {
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(query_escape("Docker registry"), "Docker%20registry");
    }
}
