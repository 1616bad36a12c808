//! Where Stratum V1 miners connect (`sv1_listen_addr`): on by default beside the SV2 port, so
//! an operator who changes `listen_addr` (a blvm-node module listens on 127.0.0.1:3334) gets
//! the SV1 port next to it instead of a clash with a fixed default.

use std::net::SocketAddr;

/// `text` as the SV1 listening address: `off` (or `false`, `none`) for no SV1 listener; unset,
/// the SV2 address's host with the next port (port 0, an ephemeral port, stays 0).
pub(super) fn resolve(text: Option<&str>, sv2: SocketAddr) -> Result<Option<SocketAddr>, String> {
    match text.map(str::trim) {
        Some(t) if ["off", "false", "none"].contains(&t.to_ascii_lowercase().as_str()) => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|e| format!("`{t}`: {e} (a HOST:PORT, or `off`)")),
        None => {
            let port = match sv2.port() {
                0 => 0,
                p => p.checked_add(1).ok_or_else(|| {
                    format!("no port after listen_addr's {p}: set sv1_listen_addr")
                })?,
            };
            Ok(Some(SocketAddr::new(sv2.ip(), port)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn beside_the_sv2_port_by_default() {
        assert_eq!(
            resolve(None, addr("0.0.0.0:3333")),
            Ok(Some(addr("0.0.0.0:3334")))
        );
        assert_eq!(
            resolve(None, addr("127.0.0.1:3334")),
            Ok(Some(addr("127.0.0.1:3335")))
        );
        assert_eq!(
            resolve(None, addr("127.0.0.1:0")),
            Ok(Some(addr("127.0.0.1:0")))
        );
        assert!(resolve(None, addr("127.0.0.1:65535")).is_err());
    }

    #[test]
    fn configured_or_off() {
        assert_eq!(
            resolve(Some("10.0.0.1:4444"), addr("0.0.0.0:3333")),
            Ok(Some(addr("10.0.0.1:4444")))
        );
        assert_eq!(resolve(Some("off"), addr("0.0.0.0:3333")), Ok(None));
        assert_eq!(resolve(Some("OFF"), addr("0.0.0.0:3333")), Ok(None));
        assert!(resolve(Some("nowhere"), addr("0.0.0.0:3333")).is_err());
    }
}
