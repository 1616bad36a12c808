//! The options blvm-node gives the pool when it starts it as a module: DATA_DIR/config.toml,
//! then the `MODULE_CONFIG_*` values over it, then the module's identity and socket. The node
//! side ([`ModuleEnv`]) only reads the environment; this composition belongs to the
//! configuration, which nothing below imports.

use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::{ConfigError, PoolOptions};
use crate::node::module::ModuleEnv;

impl PoolOptions {
    /// The options the node's configuration gives us: DATA_DIR/config.toml if it exists, the
    /// MODULE_CONFIG_* values over it, and the module's identity and socket.
    ///
    /// The node passes every value as text, and passes keys of its own too (`version`,
    /// `database_backend` ...): a value is taken as TOML where that fits the key (`true`,
    /// `18`) and as a string otherwise; keys we do not have are skipped and listed in the
    /// second return value for the log.
    pub fn from_module_env(env: &ModuleEnv) -> Result<(PoolOptions, Vec<String>), ConfigError> {
        let file = match &env.data_dir {
            Some(dir) => {
                let path = dir.join("config.toml");
                if path.exists() {
                    PoolOptions::from_file(&path)?
                } else {
                    PoolOptions::default()
                }
            }
            None => PoolOptions::default(),
        };
        let source = Path::new("[modules.blvm-stratum-v2] (MODULE_CONFIG_*)");
        let mut table = toml::Table::new();
        let mut skipped = Vec::new();
        for (key, text) in &env.config {
            let dotted = key.split_once('.');
            if dotted.map_or(key.as_str(), |(head, _)| head) == "webhooks" {
                return Err(webhooks_in_the_nodes_section(source));
            }
            // The node flattens a nested table into dotted keys (`users.alice.address`): put
            // back as tables.
            if let Some((head, rest)) = dotted
                && pool_option_keys().contains(&head)
            {
                insert_dotted(&mut table, head, rest, toml::Value::String(text.clone()));
                continue;
            }
            match option_value(key, text) {
                Some(v) => {
                    table.insert(key.clone(), v);
                }
                None => skipped.push(key.clone()),
            }
        }
        let from_node =
            PoolOptions::from_toml(&toml::to_string(&table).unwrap_or_default(), source)?;
        let mut o = file.overlay(&from_node);
        o.module_id = Some(env.module_id.clone());
        o.module_name = Some(env.module_name.clone());
        o.socket_path = Some(env.socket_path.clone());
        if o.data_dir.is_none() {
            o.data_dir.clone_from(&env.data_dir);
        }
        Ok((o, skipped))
    }
}

/// `[[webhooks]]` cannot come through the node: it flattens an array of tables into one line
/// of their texts joined by commas, which no reading can split back.
fn webhooks_in_the_nodes_section(source: &Path) -> ConfigError {
    ConfigError::Parse {
        path: source.to_path_buf(),
        message: "`webhooks` cannot be given in the node's [modules.blvm-stratum-v2] section \
                  (blvm-node flattens an array of tables): put them in DATA_DIR/config.toml"
            .into(),
    }
}

/// Sets `rest` (a dotted path) under `table[head]` to `value`, making the tables between.
fn insert_dotted(table: &mut toml::Table, head: &str, rest: &str, value: toml::Value) {
    let mut at = table
        .entry(head.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let mut parts = rest.split('.').peekable();
    while let Some(part) = parts.next() {
        let toml::Value::Table(t) = at else {
            return;
        };
        if parts.peek().is_none() {
            t.insert(part.to_owned(), value);
            return;
        }
        at = t
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
}

/// `text` as the TOML value key `key` of [`PoolOptions`] takes, or `None` if we have no such
/// key. A list reaches us as its items joined by commas (how the node flattens an array).
fn option_value(key: &str, text: &str) -> Option<toml::Value> {
    if !pool_option_keys().contains(&key) {
        return None;
    }
    let fits = |v: &toml::Value| {
        let mut t = toml::Table::new();
        t.insert(key.to_owned(), v.clone());
        toml::Value::Table(t).try_into::<PoolOptions>().is_ok()
    };
    if let Ok(t) = toml::from_str::<toml::Table>(&format!("v = {text}"))
        && let Some(v) = t.get("v")
        && fits(v)
    {
        return Some(v.clone());
    }
    let list = toml::Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| toml::Value::String(item.to_owned()))
            .collect(),
    );
    if fits(&list) {
        return Some(list);
    }
    // A string; if the key takes something else, the parse names the key and the problem.
    Some(toml::Value::String(text.to_owned()))
}

/// The keys [`PoolOptions`] takes (field names and their aliases), as serde's derive lists
/// them: read off the derived `Deserialize`, which names them when it asks for a struct.
fn pool_option_keys() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    let _ = PoolOptions::deserialize(StructFields(&mut keys));
    keys
}

/// A deserializer that only records the field names a struct's `Deserialize` asks for.
struct StructFields<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for StructFields<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(list: &[(&str, &str)]) -> ModuleEnv {
        ModuleEnv::from_vars(list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
            .expect("module env")
    }

    #[test]
    fn the_keys_are_the_fields_and_their_aliases() {
        let keys = pool_option_keys();
        for key in [
            "listen_addr",
            "listen_address",
            "shares_per_minute",
            "enabled",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert!(!keys.contains(&"database_backend"));
    }

    #[test]
    fn reads_the_nodes_config() {
        let env = env(&[
            ("MODULE_NAME", "blvm-stratum-v2"),
            ("MODULE_ID", "m-1"),
            ("SOCKET_PATH", "/tmp/node.sock"),
            ("DATA_DIR", "/nonexistent/blvm-stratum-v2"),
            ("MODULE_CONFIG_LISTEN_ADDR", "127.0.0.1:3334"),
            ("MODULE_CONFIG_ENABLED", "true"),
            ("MODULE_CONFIG_SHARES_PER_MINUTE", "30"),
            ("MODULE_CONFIG_POOL_SIGNATURE", "42"),
            ("MODULE_CONFIG_DATABASE_BACKEND", "sled"),
        ]);
        let (o, skipped) = PoolOptions::from_module_env(&env).expect("options");
        assert_eq!(o.listen_addr.as_deref(), Some("127.0.0.1:3334"));
        assert_eq!(o.enabled, Some(true));
        assert_eq!(o.shares_per_minute, Some(30.0));
        assert_eq!(o.pool_signature.as_deref(), Some("42"));
        assert_eq!(
            o.data_dir.as_deref(),
            Some(Path::new("/nonexistent/blvm-stratum-v2"))
        );
        assert_eq!(o.socket_path.as_deref(), Some(Path::new("/tmp/node.sock")));
        assert_eq!(o.module_id.as_deref(), Some("m-1"));
        assert_eq!(skipped, vec!["database_backend".to_owned()]);
    }

    /// What the node makes of lists and nested tables in the pool's section: lists joined by
    /// commas (`proxy_protocol_from = ["127.0.0.1/32", "::1/128"]`), tables as dotted keys
    /// (`[users.alice]`, whose name reaches us in lower case: the node upper-cases keys);
    /// `[[webhooks]]`, which it cannot flatten back, is refused with where to put it.
    #[test]
    fn lists_and_tables_flattened_by_the_node() {
        let base = [
            ("MODULE_ID", "m-1"),
            ("SOCKET_PATH", "/tmp/node.sock"),
            ("DATA_DIR", "/nonexistent/blvm-stratum-v2"),
        ];
        let with = |more: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(more);
            env(&all)
        };
        let (o, skipped) = PoolOptions::from_module_env(&with(&[
            ("MODULE_CONFIG_PROXY_PROTOCOL_FROM", "127.0.0.1/32,::1/128"),
            ("MODULE_CONFIG_CONNECTION_ALLOW_LIST", "10.0.0.0/8"),
            ("MODULE_CONFIG_USERS.ALICE.ADDRESS", "bcrt1qalice"),
            ("MODULE_CONFIG_USERS.ALICE.SCHEME", "solo"),
            ("MODULE_CONFIG_USERS.BOB.ADDRESS", "bcrt1qbob"),
        ]))
        .expect("options");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            o.proxy_protocol_from,
            Some(vec!["127.0.0.1/32".to_owned(), "::1/128".to_owned()])
        );
        assert_eq!(o.connection_allow_list, Some(vec!["10.0.0.0/8".to_owned()]));
        let users = o.users.expect("users");
        assert_eq!(users["alice"].address, "bcrt1qalice");
        assert_eq!(users["alice"].scheme.as_deref(), Some("solo"));
        assert_eq!(users["bob"].address, "bcrt1qbob");
        let err = PoolOptions::from_module_env(&with(&[(
            "MODULE_CONFIG_WEBHOOKS",
            "{ url = \"http://x\" }",
        )]))
        .expect_err("webhooks")
        .to_string();
        assert!(err.contains("DATA_DIR/config.toml"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let env = env(&[
            ("MODULE_ID", "m-1"),
            ("SOCKET_PATH", "/tmp/node.sock"),
            ("MODULE_CONFIG_SHARES_PER_MINUTE", "lots"),
        ]);
        let err = PoolOptions::from_module_env(&env)
            .expect_err("bad value")
            .to_string();
        assert!(err.contains("shares_per_minute"), "{err}");
    }
}
