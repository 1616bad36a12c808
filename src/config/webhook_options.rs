//! The webhooks' keys (issue 16): `[[webhooks]]` entries (`url`, `events`, `secret` or
//! `secret_file`) and `webhook_worker_offline_secs`, `webhook_queue`, `webhook_timeout_secs`,
//! `webhook_max_attempts`, `webhook_pool_id`. Each is checked at start: a URL that is not
//! `http://HOST...`, an unknown event name, a secret given twice, or a bound of zero stops the
//! start naming the key.

use std::time::Duration;

use super::{ConfigError, PoolOptions, invalid, secrets};
use crate::mining::MiningConfig;
use crate::webhook::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, DEFAULT_TIMEOUT_SECS, DEFAULT_WORKER_OFFLINE_SECS,
    EventKind, EventSet, HookSettings, WebhookSecret, WebhookSettings, parse_url,
};

/// Most attempts per event.
const MAX_ATTEMPTS: u32 = 20;
/// Longest offline time: the pool forgets a worker after an hour without a share.
const MAX_OFFLINE_SECS: u64 = 3_599;

/// The webhooks' settings (no `[[webhooks]]`: none, nothing watched).
pub(super) fn webhook_settings(
    o: &PoolOptions,
    source_name: &str,
) -> Result<WebhookSettings, ConfigError> {
    let d = WebhookSettings::default();
    let mut hooks = Vec::new();
    for (n, h) in o.webhooks.iter().flatten().enumerate() {
        let refuse = |why: String| {
            invalid(
                source_name,
                "webhooks",
                format!("[[webhooks]] #{}: {why}", n + 1),
            )
        };
        let url = parse_url(h.url.trim()).map_err(|e| refuse(format!("url {e}")))?;
        let events = match &h.events {
            None => EventSet::all(),
            Some(names) if names.is_empty() => {
                return Err(refuse(
                    "events is empty (leave it out for every event)".into(),
                ));
            }
            Some(names) => EventSet::from_kinds(
                names
                    .iter()
                    .map(|name| {
                        EventKind::from_name(name).ok_or_else(|| {
                            let known: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                            refuse(format!(
                                "events: `{name}` is not an event (known: {})",
                                known.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let secret = match (&h.secret, &h.secret_file) {
            (Some(_), Some(_)) => {
                return Err(refuse("give secret or secret_file, not both".into()));
            }
            (Some(s), None) if s.is_empty() => return Err(refuse("secret is empty".into())),
            (Some(s), None) => Some(WebhookSecret::new(s.as_bytes().to_vec())),
            (None, Some(path)) => {
                let text =
                    secrets::read_secret_file(path).map_err(|source| ConfigError::SecretFile {
                        key: "webhooks.secret_file",
                        source,
                    })?;
                Some(WebhookSecret::new(text.into_bytes()))
            }
            (None, None) => None,
        };
        hooks.push(HookSettings {
            url,
            events,
            secret,
        });
    }
    let offline_secs = match o
        .webhook_worker_offline_secs
        .unwrap_or(DEFAULT_WORKER_OFFLINE_SECS)
    {
        s @ 1..=MAX_OFFLINE_SECS => s,
        s => {
            return Err(invalid(
                source_name,
                "webhook_worker_offline_secs",
                format!(
                    "{s}: must be 1 to {MAX_OFFLINE_SECS} (the pool forgets a worker after an hour)"
                ),
            ));
        }
    };
    let queue = match o.webhook_queue.unwrap_or(DEFAULT_QUEUE) {
        0 => {
            return Err(invalid(
                source_name,
                "webhook_queue",
                "0: must be at least 1",
            ));
        }
        n => n,
    };
    let timeout_secs = match o.webhook_timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS) {
        s @ 1..=300 => s,
        s => {
            return Err(invalid(
                source_name,
                "webhook_timeout_secs",
                format!("{s}: must be 1 to 300"),
            ));
        }
    };
    let max_attempts = match o.webhook_max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS) {
        n @ 1..=MAX_ATTEMPTS => n,
        n => {
            return Err(invalid(
                source_name,
                "webhook_max_attempts",
                format!("{n}: must be 1 to {MAX_ATTEMPTS}"),
            ));
        }
    };
    let pool_id = match (&o.webhook_pool_id, &o.pool_signature) {
        (Some(id), _) => id.clone(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => {
            String::from_utf8_lossy(&MiningConfig::default().coinbase.pool_tag).into_owned()
        }
    };
    Ok(WebhookSettings {
        hooks,
        worker_offline_after: Duration::from_secs(offline_secs),
        queue,
        timeout: Duration::from_secs(timeout_secs),
        max_attempts,
        pool_id,
        ..d
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(text: &str) -> Result<WebhookSettings, ConfigError> {
        let o = PoolOptions::from_toml(text, Path::new("pool.toml")).expect("parses");
        webhook_settings(&o, "pool.toml")
    }

    #[test]
    fn none_by_default_and_every_event_unless_listed() {
        let d = settings("").unwrap();
        assert!(d.hooks.is_empty());
        assert_eq!(d.worker_offline_after, Duration::from_secs(600));
        assert_eq!(d.pool_id, "/blvm-stratum-v2/");
        let s = settings(
            r#"
            webhook_worker_offline_secs = 30
            webhook_queue = 8
            webhook_max_attempts = 3
            pool_signature = "/mine/"
            [[webhooks]]
            url = "http://127.0.0.1:9000/hook"
            [[webhooks]]
            url = "http://relay.local/token-Zk3q"
            events = ["block_found", "node_unreachable"]
            secret = "s3cret"
            "#,
        )
        .unwrap();
        assert_eq!(s.hooks.len(), 2);
        assert_eq!(s.hooks[0].events, EventSet::all());
        assert!(s.hooks[1].events.contains(EventKind::BlockFound));
        assert!(!s.hooks[1].events.contains(EventKind::BlockAccepted));
        assert!(s.hooks[1].secret.is_some());
        assert_eq!((s.queue, s.max_attempts), (8, 3));
        assert_eq!(s.pool_id, "/mine/");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("token-Zk3q"),
            "{shown}"
        );
        assert!(shown.contains("relay.local"), "{shown}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[[webhooks]]\nurl = \"https://example.com/\"", "webhooks"),
            ("[[webhooks]]\nurl = \"nowhere\"", "webhooks"),
            (
                "[[webhooks]]\nurl = \"http://a/\"\nevents = [\"block\"]",
                "webhooks",
            ),
            (
                "[[webhooks]]\nurl = \"http://a/\"\nsecret = \"x\"\nsecret_file = \"/x\"",
                "webhooks",
            ),
            (
                "webhook_worker_offline_secs = 0",
                "webhook_worker_offline_secs",
            ),
            (
                "webhook_worker_offline_secs = 7200",
                "webhook_worker_offline_secs",
            ),
            ("webhook_queue = 0", "webhook_queue"),
            ("webhook_max_attempts = 0", "webhook_max_attempts"),
            ("webhook_timeout_secs = 0", "webhook_timeout_secs"),
        ] {
            let e = settings(text).expect_err(text).to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = settings("[[webhooks]]\nurl = \"https://example.com/\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("relay"), "{e}");
    }
}
