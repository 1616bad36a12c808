//! Where and how to reach a node's JSON-RPC: its URL, credentials, poll interval and request
//! bound, checked once when the configuration is read.

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

/// Where and how to reach the node.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl RpcConfig {
    /// Parses `url` (`http://host:port[/path]`; the scheme may be left out; `https` is not
    /// supported) with default poll interval and timeout.
    pub fn new(url: &str, auth: RpcAuth) -> Result<RpcConfig, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "`{url}`: scheme `{scheme}` is not supported (only http)"
                ));
            }
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{url}`: put credentials in rpc_user/rpc_password or rpc_cookie_file, not in the URL"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unterminated IPv6 address"))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = port
            .ok_or_else(|| format!("`{url}`: no port (Bitcoin Core regtest: 18443)"))?
            .parse::<u16>()
            .map_err(|e| format!("`{url}`: bad port: {e}"))?;
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{url}`: bad path"));
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
            .map_err(|e| format!("`{url}`: {e}"))?;
        Ok(config)
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

    #[test]
    fn passwords_are_not_logged() {
        let auth = RpcAuth::UserPassword {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
