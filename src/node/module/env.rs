//! What blvm-node tells a module it starts: environment variables, no arguments. Only read
//! here; the configuration (`crate::config`) turns them into the pool's options.

use std::path::PathBuf;

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
    fn detects_the_node() {
        assert_eq!(ModuleEnv::from_vars(vars(&[("PATH", "/bin")])), None);
        let env = ModuleEnv::from_vars(vars(&[
            ("MODULE_ID", "m-1"),
            ("SOCKET_PATH", "/tmp/node.sock"),
            ("DATA_DIR", "/data"),
            ("MODULE_CONFIG_LISTEN_ADDR", "127.0.0.1:3334"),
            ("MODULE_CONFIG_ENABLED", "true"),
        ]))
        .expect("module env");
        assert_eq!(env.module_id, "m-1");
        assert_eq!(env.module_name, "blvm-stratum-v2");
        assert_eq!(env.socket_path, PathBuf::from("/tmp/node.sock"));
        assert_eq!(env.data_dir, Some(PathBuf::from("/data")));
        assert_eq!(
            env.config,
            vec![
                ("enabled".to_owned(), "true".to_owned()),
                ("listen_addr".to_owned(), "127.0.0.1:3334".to_owned()),
            ]
        );
    }
}
