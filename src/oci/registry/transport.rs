//! How we reach a registry: HTTPS with the system roots (or plain HTTP for local and
//! explicitly insecure registries), environment proxies, timeouts and the retry policy.

use std::sync::OnceLock;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Attempts for one request when the connection fails or the server answers 5xx.
pub const MAX_ATTEMPTS: u32 = 4;

/// Delay before retry number `attempt` (1-based): 250 ms doubling, capped at 2 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.saturating_sub(1).min(3)).min(2000))
}

/// Whether `host` (as in a reference, maybe with a port) may be reached over plain HTTP:
/// loopback always, plus the hosts listed in `III_INSECURE_REGISTRIES` (comma-separated,
/// `host` or `host:port`). Like docker, such hosts are still tried over HTTPS first.
pub fn is_insecure(host: &str) -> bool {
    if is_loopback(host) {
        return true;
    }
    listed(
        &std::env::var("III_INSECURE_REGISTRIES").unwrap_or_default(),
        host,
    )
}

/// Whether `host` is in a comma-separated list of `host` or `host:port` entries.
fn listed(list: &str, host: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|h| !h.is_empty() && (h == host || strip_port(host) == h))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

pub fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// The base URL of the registry API for `host`: HTTPS, except for an insecure host (see
/// [`is_insecure`]) whose HTTPS attempt fails at the transport level (no TLS there, or a
/// certificate we do not trust): then plain HTTP. Certificates are never left unverified.
pub fn base_url(agent: &ureq::Agent, host: &str) -> crate::Result<String> {
    let https = format!("https://{host}");
    if !is_insecure(host) {
        return Ok(https);
    }
    // Any HTTP answer, even 401 or 404, shows that HTTPS works.
    match agent.get(format!("{https}/v2/")).call() {
        Ok(_) => Ok(https),
        // It speaks TLS but with a certificate we do not trust: falling back to plain HTTP
        // would only trade this for a confusing "HTTP 400" from the TLS server.
        Err(e) if e.to_string().contains("certificate") => Err(crate::err!(
            "registry {host} serves HTTPS with a certificate that is not trusted ({e}); \
             put its CA certificate in a PEM file named by SSL_CERT_FILE"
        )),
        Err(_) => Ok(format!("http://{host}")),
    }
}

/// Root certificates: `SSL_CERT_FILE` when set, else the system bundle, else the bundled
/// Mozilla roots (a system without a CA bundle still reaches public registries).
fn root_certs() -> &'static RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let explicit = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty());
        let candidates: Vec<std::path::PathBuf> = match explicit {
            Some(p) => vec![p.into()],
            None => [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .iter()
            .map(Into::into)
            .collect(),
        };
        for path in candidates {
            let Ok(pem) = std::fs::read(&path) else {
                continue;
            };
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if !certs.is_empty() {
                return RootCerts::new_with_certs(&certs);
            }
        }
        RootCerts::WebPki
    })
}

/// An HTTP agent for `host`. Loopback registries bypass any proxy (as Go's and curl's
/// defaults do); others use `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` minus `NO_PROXY`.
pub fn agent_for(host: &str) -> ureq::Agent {
    let proxy = if is_loopback(host) {
        None
    } else {
        ureq::Proxy::try_from_env()
    };
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(proxy)
        .tls_config(
            TlsConfig::builder()
                .root_certs(root_certs().clone())
                .build(),
        )
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // A stalled body is a dropped connection for the retry logic, not a hang.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(8)
        .user_agent(concat!("iii/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Whether a transport error is worth another attempt.
pub fn is_transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_)
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_may_be_plain_http() {
        assert!(is_insecure("localhost:5000"));
        assert!(is_insecure("127.0.0.1:34567"));
        assert!(is_insecure("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("localhost.example.com"));
        // Nothing listens on port 9 of loopback: the HTTPS attempt fails, HTTP is chosen.
        let agent = agent_for("127.0.0.1:9");
        assert_eq!(
            base_url(&agent, "127.0.0.1:9").unwrap(),
            "http://127.0.0.1:9"
        );
        assert!(listed("reg.lan:5000, other.lan", "reg.lan:5000"));
        assert!(listed("reg.lan:5000, other.lan", "other.lan:443"));
        assert!(!listed("reg.lan:5000", "reg.lan:5001"));
        assert!(!listed("", "ghcr.io"));
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert!(backoff(30) <= Duration::from_secs(2));
    }
}
