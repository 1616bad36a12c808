//! What blvm-node tells a module it starts: environment variables, no arguments.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, PoolOptions};

/// The environment blvm-node gives a module process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEnv {
    /// MODULE_NAME.
    pub module_name: String,
    /// MODULE_ID.
    pub module_id: String,
    /// SOCKET_PATH: the node's IPC socket.
    pub socket_path: PathBuf,
    /// DATA_DIR: the module's own data directory.
    pub data_dir: Option<PathBuf>,
    /// MODULE_CONFIG_<KEY>=value pairs, keys lower-cased (the node upper-cases them).
    pub config: Vec<(String, String)>,
}

impl ModuleEnv {
    /// The process environment, if a node started us (SOCKET_PATH and MODULE_ID are set).
    pub fn from_env() -> Option<ModuleEnv> {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The same from any list of variables.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Option<ModuleEnv> {
        let mut name = None;
        let mut id = None;
        let mut socket = None;
        let mut data_dir = None;
        let mut config = Vec::new();
        for (k, v) in vars {
            match k.as_str() {
                "MODULE_NAME" => name = Some(v),
                "MODULE_ID" => id = Some(v),
                "SOCKET_PATH" => socket = Some(PathBuf::from(v)),
                "DATA_DIR" => data_dir = Some(PathBuf::from(v)),
                _ => {
                    if let Some(key) = k.strip_prefix("MODULE_CONFIG_") {
                        config.push((key.to_ascii_lowercase(), v));
                    }
                }
            }
        }
        config.sort();
        Some(ModuleEnv {
            module_id: id?,
            socket_path: socket?,
            module_name: name.unwrap_or_else(|| "blvm-stratum-v2".into()),
            data_dir,
            config,
        })
    }

    /// The options the node's configuration gives us: DATA_DIR/config.toml if it exists, the
    /// MODULE_CONFIG_* values over it, and the module's identity and socket.
    ///
    /// The node passes every value as text, and passes keys of its own too (`version`,
    /// `database_backend` ...): a value is taken as TOML where that fits the key (`true`,
    /// `18`) and as a string otherwise; keys we do not have are skipped and listed in the
    /// second return value for the log.
    pub fn options(&self) -> Result<(PoolOptions, Vec<String>), ConfigError> {
        let file = match &self.data_dir {
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
        for (key, text) in &self.config {
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
        o.module_id = Some(self.module_id.clone());
        o.module_name = Some(self.module_name.clone());
        o.socket_path = Some(self.socket_path.clone());
        if o.data_dir.is_none() {
            o.data_dir.clone_from(&self.data_dir);
        }
        Ok((o, skipped))
    }
}

/// `text` as the TOML value key `key` of [`PoolOptions`] takes, or `None` if we have no such
/// key.
fn option_value(key: &str, text: &str) -> Option<toml::Value> {
    let check = |v: &toml::Value| {
        let mut t = toml::Table::new();
        t.insert(key.to_owned(), v.clone());
        toml::Value::Table(t).try_into::<PoolOptions>().map(|_| ())
    };
    if let Ok(t) = toml::from_str::<toml::Table>(&format!("v = {text}"))
        && let Some(v) = t.get("v")
        && check(v).is_ok()
    {
        return Some(v.clone());
    }
    let as_string = toml::Value::String(text.to_owned());
    match check(&as_string) {
        Ok(()) => Some(as_string),
        Err(e) if e.to_string().contains("unknown field") => None,
        // A key we have with a value of the wrong type goes through, so that the parse names
        // the key and the problem instead of skipping it.
        Err(_) => Some(as_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn detects_the_node_and_reads_its_config() {
        assert_eq!(ModuleEnv::from_vars(vars(&[("PATH", "/bin")])), None);
        let env = ModuleEnv::from_vars(vars(&[
            ("MODULE_NAME", "blvm-stratum-v2"),
            ("MODULE_ID", "m-1"),
            ("SOCKET_PATH", "/tmp/node.sock"),
            ("DATA_DIR", "/nonexistent/blvm-stratum-v2"),
            ("MODULE_CONFIG_LISTEN_ADDR", "127.0.0.1:3334"),
            ("MODULE_CONFIG_ENABLED", "true"),
            ("MODULE_CONFIG_SHARES_PER_MINUTE", "30"),
            ("MODULE_CONFIG_POOL_SIGNATURE", "42"),
            ("MODULE_CONFIG_DATABASE_BACKEND", "sled"),
        ]))
        .expect("module env");
        assert_eq!(env.module_id, "m-1");
        let (o, skipped) = env.options().expect("options");
        assert_eq!(o.listen_addr.as_deref(), Some("127.0.0.1:3334"));
        assert_eq!(o.enabled, Some(true));
        assert_eq!(o.shares_per_minute, Some(30.0));
        assert_eq!(o.pool_signature.as_deref(), Some("42"));
        assert_eq!(
            o.data_dir.as_deref(),
            Some(Path::new("/nonexistent/blvm-stratum-v2"))
        );
        assert_eq!(o.socket_path.as_deref(), Some(Path::new("/tmp/node.sock")));
        assert_eq!(skipped, vec!["database_backend".to_owned()]);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let env = ModuleEnv::from_vars(vars(&[
            ("MODULE_ID", "m-1"),
            ("SOCKET_PATH", "/tmp/node.sock"),
            ("MODULE_CONFIG_SHARES_PER_MINUTE", "lots"),
        ]))
        .expect("module env");
        let err = env.options().expect_err("bad value").to_string();
        assert!(err.contains("shares_per_minute"), "{err}");
    }
}
