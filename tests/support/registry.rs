//! A real registry: Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1:0 with
//! a temporary storage directory, optionally behind Basic auth (bcrypt htpasswd) or bearer
//! tokens issued by a small in-test token service (RS256 JWTs carrying their certificate in
//! `x5c`, signed with the `openssl` CLI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::TempDir;

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// htpasswd users; pulls and pushes need them.
    Basic {
        user: String,
        pass: String,
    },
    /// Token auth: anonymous callers get pull tokens, `user`/`pass` get pull+push.
    Bearer {
        user: String,
        pass: String,
    },
}

impl Auth {
    pub fn basic(user: &str, pass: &str) -> Auth {
        Auth::Basic {
            user: user.into(),
            pass: pass.into(),
        }
    }
    pub fn bearer(user: &str, pass: &str) -> Auth {
        Auth::Bearer {
            user: user.into(),
            pass: pass.into(),
        }
    }
}

/// Anything images can be pushed to: the real registry or the fake.
pub trait PushTarget {
    /// `127.0.0.1:PORT`.
    fn host(&self) -> String;
    /// `http`, or `https` for a registry serving TLS.
    fn scheme(&self) -> &'static str {
        "http"
    }
    /// `Authorization` header value for pushing to `repo`, if one is needed.
    fn push_auth(&self, repo: &str) -> Option<String>;
}

pub struct Registry {
    child: Child,
    pub host: String,
    auth: Auth,
    /// The self-signed certificate (for 127.0.0.1) a TLS registry serves.
    pub tls_cert: Option<PathBuf>,
    tokens: Option<TokenIssuer>,
    dir: TempDir,
}

impl Registry {
    /// Start a registry; returns `None` (after printing why) when `docker-registry` or a
    /// tool the auth mode needs is not installed.
    pub fn start(auth: Auth) -> Option<Registry> {
        Registry::start_with(auth, None)
    }

    /// Start a registry serving HTTPS only, with a fresh self-signed certificate for
    /// 127.0.0.1 (see [`Registry::tls_cert`]).
    pub fn start_tls(auth: Auth) -> Option<Registry> {
        Registry::start_tls_named(auth, None)
    }

    /// Like [`Registry::start_tls`], the certificate also naming `dns` (for tests that reach
    /// the registry under a host name, through a proxy).
    pub fn start_tls_named(auth: Auth, dns: Option<&str>) -> Option<Registry> {
        if !super::have_tool("openssl") {
            skip!("`openssl` is not installed");
            return None;
        }
        let san = match dns {
            Some(d) => format!("subjectAltName=IP:127.0.0.1,DNS:{d}"),
            None => "subjectAltName=IP:127.0.0.1".to_string(),
        };
        Registry::start_with(auth, Some(san))
    }

    /// `tls`: the subjectAltName of the certificate to serve, or `None` for plain HTTP.
    fn start_with(auth: Auth, tls: Option<String>) -> Option<Registry> {
        let needs: &[&str] = match auth {
            Auth::None => &["docker-registry"],
            Auth::Basic { .. } => &["docker-registry", "htpasswd"],
            Auth::Bearer { .. } => &["docker-registry", "openssl"],
        };
        for tool in needs {
            if !super::have_tool(tool) {
                skip!("`{tool}` is not installed");
                return None;
            }
        }
        let dir = TempDir::new("registry");
        let data = dir.path().join("data");
        let mut auth_yaml = String::new();
        let mut tokens = None;
        match &auth {
            Auth::None => {}
            Auth::Basic { user, pass } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("running htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, out.stdout).unwrap();
                auth_yaml = format!(
                    "auth: {{htpasswd: {{realm: iii-test, path: {}}}}}\n",
                    file.display()
                );
            }
            Auth::Bearer { user, pass } => {
                let issuer = TokenIssuer::start(dir.path(), user, pass);
                auth_yaml = format!(
                    "auth: {{token: {{realm: \"{}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {}}}}}\n",
                    issuer.realm(),
                    issuer.cert_path.display()
                );
                tokens = Some(issuer);
            }
        }
        let mut tls_yaml = String::new();
        let mut tls_cert = None;
        if let Some(san) = tls {
            let (key, cert) = (dir.path().join("tls.key"), dir.path().join("tls.crt"));
            server_certificate(&key, &cert, &san);
            tls_yaml = format!(
                ", tls: {{certificate: {}, key: {}}}",
                cert.display(),
                key.display()
            );
            tls_cert = Some(cert);
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info, formatter: text}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: 127.0.0.1:0{tls_yaml}}}\n{auth_yaml}",
                data.display()
            ),
        )
        .unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut reg = Registry {
            child,
            host: String::new(),
            auth,
            tls_cert,
            tokens,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(i) = text.find("listening on 127.0.0.1:") {
                let rest = &text[i + "listening on 127.0.0.1:".len()..];
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                reg.host = format!("127.0.0.1:{port}");
                break;
            }
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited ({status}): {text}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(reg)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Number of token requests served so far (bearer mode).
    pub fn token_requests(&self) -> usize {
        self.tokens
            .as_ref()
            .map_or(0, |t| t.served.load(Ordering::SeqCst))
    }
}

impl PushTarget for Registry {
    fn host(&self) -> String {
        self.host.clone()
    }
    fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }
    fn push_auth(&self, repo: &str) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic { user, pass } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{user}:{pass}"))
            )),
            Auth::Bearer { .. } => Some(format!(
                "Bearer {}",
                self.tokens.as_ref().unwrap().mint(repo, &["pull", "push"])
            )),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SERVICE: &str = "iii-test-registry";
const ISSUER: &str = "iii-test-issuer";

/// A token service: `GET /token?service=…&scope=repository:NAME:ACTIONS`.
struct TokenIssuer {
    key_path: PathBuf,
    cert_path: PathBuf,
    cert_der_b64: String,
    port: u16,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TokenIssuer {
    fn start(dir: &Path, user: &str, pass: &str) -> TokenIssuer {
        let key_path = dir.join("token.key");
        let cert_path = dir.join("token.crt");
        self_signed(
            &key_path,
            &cert_path,
            &["-subj", "/CN=iii-test-token-issuer"],
        );
        // The PEM body is the base64 of the DER certificate: exactly what x5c carries.
        let pem = std::fs::read_to_string(&cert_path).unwrap();
        let cert_der_b64: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let mut issuer = TokenIssuer {
            key_path,
            cert_path,
            cert_der_b64,
            port,
            stop: stop.clone(),
            served: served.clone(),
            thread: None,
        };
        let signer = issuer.signer();
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
        issuer.thread = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                served.fetch_add(1, Ordering::SeqCst);
                let _ = serve_token(conn, &signer, &expected);
            }
        }));
        issuer
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn signer(&self) -> Signer {
        Signer {
            key_path: self.key_path.clone(),
            cert_der_b64: self.cert_der_b64.clone(),
        }
    }

    fn mint(&self, repo: &str, actions: &[&str]) -> String {
        self.signer().mint(repo, actions)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Signer {
    key_path: PathBuf,
    cert_der_b64: String,
}

fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

impl Signer {
    fn mint(&self, repo: &str, actions: &[&str]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_b64]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "iii-test", "aud": SERVICE,
            "exp": now + 600, "nbf": now - 60, "iat": now - 60,
            "jti": format!("{now}-{}", std::process::id()),
            "access": [{"type": "repository", "name": repo, "actions": actions}],
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-binary", "-sign"])
            .arg(&self.key_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running openssl dgst");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl dgst failed");
        format!("{input}.{}", b64url(&out.stdout))
    }
}

fn serve_token(conn: TcpStream, signer: &Signer, expected_basic: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let scope = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .unwrap_or_default();
    let (status, body) = match authorization.as_deref() {
        Some(a) if a != expected_basic => (401, r#"{"details":"bad credentials"}"#.to_string()),
        auth => {
            // repository:NAME:ACTIONS — anonymous callers get pull only.
            let mut parts = scope.splitn(3, ':');
            let (_, name, wanted) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or("");
            let granted: Vec<&str> = wanted
                .unwrap_or("")
                .split(',')
                .filter(|a| auth.is_some() || *a == "pull")
                .collect();
            let token = signer.mint(name, &granted);
            (
                200,
                serde_json::json!({"token": token, "access_token": token, "expires_in": 600})
                    .to_string(),
            )
        }
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut sink = Vec::new();
    let _ = reader.take(0).read_to_end(&mut sink);
    Ok(())
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        } else if b[i] == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decode a Basic header value (for fakes that check it).
pub fn decode_basic(header: &str) -> Option<(String, String)> {
    let raw = STANDARD.decode(header.strip_prefix("Basic ")?).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// A self-signed server certificate for 127.0.0.1 (`san`: its subjectAltName, e.g.
/// `subjectAltName=IP:127.0.0.1`), which clients trust through SSL_CERT_FILE.
pub fn server_certificate(key: &Path, cert: &Path, san: &str) {
    self_signed(
        key,
        cert,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            san,
            // A server certificate, not a CA: rustls refuses a CA as the end entity.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
    );
}

/// A fresh RSA key and a self-signed certificate for it (`openssl req -x509`), with `extra`
/// arguments such as the subject and extensions.
fn self_signed(key: &Path, cert: &Path, extra: &[&str]) {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(extra)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
