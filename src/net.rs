//! Outbound connections: one TLS configuration and one HTTP client for the whole process, and the
//! guard that keeps webhook and image URLs away from loopback and private networks unless the
//! operator allows it (`--allow-private-urls`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

/// The process's TLS client settings, for HTTP here and for WebSockets (the ElevenLabs client):
/// rustls on ring with Mozilla's roots, given explicitly because the process installs no default
/// crypto provider.
pub fn tls_client_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        // unwrap: ring's default provider supports the safe default protocol versions.
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The process's one HTTP client (`tls_client_config`, no redirects: a redirect could lead a
/// checked URL to a private address).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_client_config())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        // Servers commonly close idle keep-alive connections after 5 s (actix-web does); a pooled
        // connection reused just as the server closes it fails the request. Drop them sooner.
        .pool_idle_timeout(Duration::from_secs(3))
        .build()
        // unwrap: the builder only fails on an invalid TLS backend, which is fixed above.
        .unwrap()
}

#[derive(Debug, Clone, Copy)]
pub struct UrlPolicy {
    pub allow_private: bool,
}

impl UrlPolicy {
    /// Syntax and scheme only (no DNS): for validating request bodies.
    pub fn parse(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        let host = url.host_str().ok_or("URL has no host")?;
        if !self.allow_private {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
                return Err("must not point at a loopback or private address".into());
            }
            if let Ok(ip) = literal.parse::<IpAddr>() {
                if is_private(ip) {
                    return Err("must not point at a loopback or private address".into());
                }
            }
        }
        Ok(url)
    }

    /// Before connecting: every address the host resolves to must be public (unless allowed).
    pub async fn check_resolved(&self, url: &Url) -> Result<(), String> {
        if self.allow_private {
            return Ok(());
        }
        let host = url.host_str().ok_or("URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs =
            tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        for addr in addrs {
            if is_private(addr.ip()) {
                return Err(format!("{host} resolves to a loopback or private address"));
            }
        }
        Ok(())
    }
}

pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // CGNAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// Reads a response body, refusing past `max` bytes without buffering more than that.
pub async fn read_limited(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n as usize > max) {
        return Err(format!("body is larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("read failed: {e}"))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("body is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_by_default() {
        let strict = UrlPolicy {
            allow_private: false,
        };
        for bad in [
            "http://127.0.0.1/x",
            "http://localhost:80/",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://192.168.0.1",
            "ftp://example.com/",
        ] {
            assert!(strict.parse(bad).is_err(), "{bad}");
        }
        assert!(strict.parse("https://example.com/hook").is_ok());
        assert!(UrlPolicy {
            allow_private: true
        }
        .parse("http://127.0.0.1:9/x")
        .is_ok());
    }
}
