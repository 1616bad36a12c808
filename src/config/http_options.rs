//! The HTTP server's keys (issue 16): `http_listen_addr` (default 127.0.0.1:8080, loopback
//! only; `""` turns the server off, as does `http_enabled = false`), `metrics_max_workers`
//! and `http_requests_per_second`; issue 18: `http_admin_token_file` (the admin API's token).

use super::{ConfigError, PoolOptions, invalid};
use crate::http::{
    AdminToken, DEFAULT_LISTEN_ADDR, DEFAULT_MAX_LABELLED_WORKERS, DEFAULT_REQUESTS_PER_SECOND,
    HttpSettings,
};

/// The HTTP server's settings, or `None` when it is turned off.
pub(super) fn http_settings(
    o: &PoolOptions,
    source_name: &str,
) -> Result<Option<HttpSettings>, ConfigError> {
    if o.http_enabled == Some(false) {
        return Ok(None);
    }
    let text = o.http_listen_addr.as_deref().unwrap_or(DEFAULT_LISTEN_ADDR);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let listen_addr = text.trim().parse().map_err(|e| {
        invalid(
            source_name,
            "http_listen_addr",
            format!("`{text}`: {e} (\"\" turns the HTTP server off)"),
        )
    })?;
    let max_labelled_workers = o
        .metrics_max_workers
        .unwrap_or(DEFAULT_MAX_LABELLED_WORKERS);
    let requests_per_second = match o
        .http_requests_per_second
        .unwrap_or(DEFAULT_REQUESTS_PER_SECOND)
    {
        0 => {
            return Err(invalid(
                source_name,
                "http_requests_per_second",
                "0: must be at least 1",
            ));
        }
        n => n,
    };
    let admin_token = match &o.http_admin_token_file {
        None => None,
        Some(path) => {
            let token = super::secrets::read_secret_file(path)
                .map_err(|e| invalid(source_name, "http_admin_token_file", e.to_string()))?;
            Some(AdminToken::new(token).map_err(|e| {
                invalid(
                    source_name,
                    "http_admin_token_file",
                    format!("{}: {e}", path.display()),
                )
            })?)
        }
    };
    Ok(Some(HttpSettings {
        listen_addr,
        max_labelled_workers,
        requests_per_second,
        admin_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_at_loopback_by_default_and_off_when_asked() {
        let on = http_settings(&PoolOptions::default(), "t")
            .unwrap()
            .unwrap();
        assert_eq!(on, HttpSettings::default());
        assert!(on.listen_addr.ip().is_loopback());
        let empty = PoolOptions {
            http_listen_addr: Some(String::new()),
            ..PoolOptions::default()
        };
        assert_eq!(http_settings(&empty, "t").unwrap(), None);
        let disabled = PoolOptions {
            http_enabled: Some(false),
            ..PoolOptions::default()
        };
        assert_eq!(http_settings(&disabled, "t").unwrap(), None);
        let bad = PoolOptions {
            http_listen_addr: Some("nowhere".into()),
            ..PoolOptions::default()
        };
        let e = http_settings(&bad, "pool.toml").unwrap_err().to_string();
        assert!(e.contains("http_listen_addr"), "{e}");
        let set = PoolOptions {
            http_listen_addr: Some("0.0.0.0:9100".into()),
            metrics_max_workers: Some(5),
            http_requests_per_second: Some(7),
            ..PoolOptions::default()
        };
        let s = http_settings(&set, "t").unwrap().unwrap();
        assert_eq!(
            (
                s.listen_addr.port(),
                s.max_labelled_workers,
                s.requests_per_second
            ),
            (9100, 5, 7)
        );
    }
}
