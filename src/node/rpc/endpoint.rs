//! Where and how to reach a node's JSON-RPC: its URL, credentials, poll interval and request
//! bound, checked once when the configuration is read. Credentials belong in `rpc_user` /
//! `rpc_password` or a cookie file; a URL that carries them anyway is refused, and the URL is
//! only ever shown (in errors, logs and `Debug`) with them hidden ([`redact_url`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default interval between two `getbestblockhash` polls: a new tip reaches the miners within
/// 100 ms (one poll, one template). Bitcoin Core answers this in microseconds; a node that
/// throttles it (HTTP 429) is polled less often by itself.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Default bound on one request (connect, send, whole response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// How the backend authenticates to the node.
#[derive(Clone, PartialEq, Eq)]
pub enum RpcAuth {
    /// No Authorization header.
    None,
    /// HTTP Basic with this user and password (Core's rpcuser/rpcpassword or rpcauth).
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// HTTP Basic from a cookie file (`__cookie__:<secret>`), read again for every request so
    /// a node restart (new cookie) is followed.
    CookieFile(PathBuf),
}

impl fmt::Debug for RpcAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcAuth::None => f.write_str("None"),
            RpcAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            RpcAuth::CookieFile(p) => f.debug_tuple("CookieFile").field(p).finish(),
        }
    }
}

/// `url` as errors and logs may show it: everything between the scheme's `://` (or the start,
/// when there is none) and the last `@` is replaced by `***`. A URL parser reads the userinfo
/// as what comes before the last `@` of the authority; this takes the last `@` of the whole
/// text instead, because a password may hold a `/`, `?` or `#`, which a parser takes for the
/// end of the authority (`http://u:ab/cd@host:1` is host `u`, port `ab`, and the password
/// would be shown in the error that says so). An `@` in the path hides the host too: less to
/// read in an error, never a password.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme), rest),
        _ => (None, url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// A URL scheme (RFC 3986 §3.1): a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Why an RPC URL cannot be used. Each names the URL as [`redact_url`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcUrlError {
    /// A scheme other than `http` (`https` included: TLS is not spoken).
    #[error("`{url}`: only http:// is supported")]
    Scheme {
        /// The URL, redacted.
        url: String,
    },
    /// User or password in the URL.
    #[error("`{url}`: put credentials in rpc_user/rpc_password or rpc_cookie_file, not in the URL")]
    Credentials {
        /// The URL, redacted.
        url: String,
    },
    /// `[` without its `]`.
    #[error("`{url}`: unterminated IPv6 address")]
    UnterminatedIpv6 {
        /// The URL, redacted.
        url: String,
    },
    /// No port (nodes have no standard HTTP port).
    #[error("`{url}`: no port (Bitcoin Core regtest: 18443)")]
    NoPort {
        /// The URL, redacted.
        url: String,
    },
    /// A port that is not a number from 0 to 65535.
    #[error("`{url}`: bad port: {source}")]
    BadPort {
        /// The URL, redacted.
        url: String,
        /// Why it does not parse.
        source: std::num::ParseIntError,
    },
    /// No host.
    #[error("`{url}`: no host")]
    NoHost {
        /// The URL, redacted.
        url: String,
    },
    /// White space or a control character in the path.
    #[error("`{url}`: bad path")]
    BadPath {
        /// The URL, redacted.
        url: String,
    },
    /// The HTTP client would not take it.
    #[error("`{url}`: {reason}")]
    Unusable {
        /// The URL, redacted.
        url: String,
        /// The HTTP client's reason.
        reason: String,
    },
}

/// Where and how to reach the node.
#[derive(Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// `http://host:port[/path]` as given.
    pub url: String,
    host: String,
    port: u16,
    path: String,
    /// Authentication.
    pub auth: RpcAuth,
    /// Interval between two `getbestblockhash` polls.
    pub poll_interval: Duration,
    /// Bound on one request.
    pub timeout: Duration,
}

impl fmt::Debug for RpcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcConfig")
            .field("url", &self.redacted_url())
            .field("auth", &self.auth)
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RpcConfig {
    /// Parses `url` (`http://host:port[/path]`; the scheme may be left out; `https` is not
    /// supported) with default poll interval and timeout.
    pub fn new(url: &str, auth: RpcAuth) -> Result<RpcConfig, RpcUrlError> {
        let shown = || redact_url(url);
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => return Err(RpcUrlError::Scheme { url: shown() }),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(RpcUrlError::Credentials { url: shown() });
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| RpcUrlError::UnterminatedIpv6 { url: shown() })?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = port
            .ok_or_else(|| RpcUrlError::NoPort { url: shown() })?
            .parse::<u16>()
            .map_err(|source| RpcUrlError::BadPort {
                url: shown(),
                source,
            })?;
        if host.is_empty() {
            return Err(RpcUrlError::NoHost { url: shown() });
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RpcUrlError::BadPath { url: shown() });
        }
        let config = RpcConfig {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            auth,
            poll_interval: DEFAULT_POLL_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        };
        // What the HTTP client will be given must parse now, not at the first request.
        config
            .uri()
            .parse::<hyper::Uri>()
            .map_err(|e| RpcUrlError::Unusable {
                url: shown(),
                reason: e.to_string(),
            })?;
        Ok(config)
    }

    /// The URL as errors and logs may show it ([`redact_url`]).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Host part of the URL.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port of the URL.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path part of the URL (`/` when none was given).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The normalised `http://host:port/path` requests go to (IPv6 hosts in brackets).
    pub fn uri(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            format!("http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = RpcConfig::new("http://127.0.0.1:18443", RpcAuth::None).unwrap();
        assert_eq!((c.host(), c.port(), c.path()), ("127.0.0.1", 18443, "/"));
        assert_eq!(c.uri(), "http://127.0.0.1:18443/");
        let c = RpcConfig::new("localhost:8332/wallet/w", RpcAuth::None).unwrap();
        assert_eq!(
            (c.host(), c.port(), c.path()),
            ("localhost", 8332, "/wallet/w")
        );
        let c = RpcConfig::new("http://[::1]:18443", RpcAuth::None).unwrap();
        assert_eq!((c.host(), c.port()), ("::1", 18443));
        assert_eq!(c.uri(), "http://[::1]:18443/");
        for bad in [
            "https://x:1",
            "http://x",
            "http://:1",
            "http://u:p@x:1",
            "http://x:99999",
            "http://x:1/a b",
        ] {
            assert!(RpcConfig::new(bad, RpcAuth::None).is_err(), "{bad}");
        }
    }

    /// A password put in the URL by mistake is never shown: not in the errors that refuse the
    /// URL (the password may hold a `/` or `?`, which a URL parser reads as the start of the
    /// path, or an `@`), nor in the configuration's `Debug`.
    #[test]
    fn a_password_in_the_url_is_never_shown() {
        for url in [
            "http://u:s3cret@x:1",
            "https://u:s3cret@x:1",
            "ftp://u:s3cret@x:1/wallet/w",
            "u:s3cret@x:1",
            "http://u:s3cret@[::1]:1",
            "http://u:s3cret@x",
            "http://u:ab/s3cret@x:1",
            "http://u:s3cret/ab@x:1",
            "http://u:s3cret?ab@x:1",
            "http://u:ab?s3cret@x:1",
            "http://u:s3cret#ab@x:1",
            "http://u:p@s3cret@x:1",
            "https://u:ab/s3cret@x:1/wallet/w",
        ] {
            let e = RpcConfig::new(url, RpcAuth::None)
                .expect_err(url)
                .to_string();
            assert!(!e.contains("s3cret"), "{url}: {e}");
            assert!(e.contains("***@"), "{url}: {e}");
        }
        assert_eq!(
            RpcConfig::new("https://u:s3cret@x:1", RpcAuth::None)
                .unwrap_err()
                .to_string(),
            "`https://***@x:1`: only http:// is supported"
        );
        assert_eq!(redact_url("http://x:1/wallet/w"), "http://x:1/wallet/w");
        // Read as host `u`, port 1 and a path holding the rest: valid, and shown without it.
        let c = RpcConfig::new("http://u:1/s3cret@x:1", RpcAuth::None).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let c = RpcConfig::new("http://127.0.0.1:18443/wallet/w", RpcAuth::None).unwrap();
        assert!(format!("{c:?}").contains("http://127.0.0.1:18443/wallet/w"));
    }

    #[test]
    fn passwords_are_not_logged() {
        let auth = RpcAuth::UserPassword {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
