//! Module host mode: blvm-node's module system on, loading modules from a modules directory.
//!
//! ```text
//! --modules-dir DIR            turn the module system on; modules live in DIR/<name>/module.toml
//!                              (+ the binary named by `entry_point`, a real file inside DIR)
//! --module NAME                the one module to load (default blvm-stratum-v2); repeatable
//! --module-config KEY=VALUE    `[modules.NAME] KEY = VALUE`; the node spawns the module with
//!                              MODULE_CONFIG_<KEY uppercased>=VALUE; repeatable
//! ```
//!
//! Module data goes to `<datadir>/modules/data/<name>` (the module's `DATA_DIR`), the node's IPC
//! socket to `<datadir>/modules/sockets/node.sock` (the module's `SOCKET_PATH`). `enabled_modules`
//! is exactly the `--module` names and there is no registry URL, so the node never tries to
//! download its baseline modules. See MODULES.md for what blvm-node 0.1.83 does with all this.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use blvm_node::config::{ModuleConfig, NodeConfig};

pub const DEFAULT_MODULE: &str = "blvm-stratum-v2";

#[derive(Default)]
pub struct ModuleArgs {
    pub modules_dir: Option<PathBuf>,
    pub modules: Vec<String>,
    pub config: Vec<(String, String)>,
}

impl ModuleArgs {
    /// Takes `flag` (and its value) if it is one of ours: `Ok(true)`; `Ok(false)` if it is not.
    pub fn parse_flag(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--modules-dir" => self.modules_dir = Some(PathBuf::from(value()?)),
            "--module" => self.modules.push(value()?),
            "--module-config" => {
                let pair = value()?;
                match pair.split_once('=') {
                    Some((k, v)) if !k.is_empty() => self.config.push((k.to_owned(), v.to_owned())),
                    _ => return Err(format!("--module-config: `{pair}` is not KEY=VALUE")),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.modules_dir.is_none() && (!self.modules.is_empty() || !self.config.is_empty()) {
            return Err("--module and --module-config need --modules-dir".to_owned());
        }
        Ok(())
    }

    fn names(&self) -> Vec<String> {
        if self.modules.is_empty() {
            vec![DEFAULT_MODULE.to_owned()]
        } else {
            self.modules.clone()
        }
    }

    pub fn enabled(&self) -> bool {
        self.modules_dir.is_some()
    }

    /// In module mode: sets `config.modules`, makes the working directory the (absolute) datadir
    /// and returns that datadir. blvm-node's IPC server creates `data/modules/<name>` relative
    /// to its working directory (ipc/server.rs:714), so this keeps it inside the datadir.
    /// Without `--modules-dir` nothing changes and the module system stays off.
    pub fn apply(&self, config: &mut NodeConfig, datadir: PathBuf) -> Result<PathBuf, String> {
        let Some(dir) = &self.modules_dir else {
            return Ok(datadir);
        };
        let modules_dir = std::path::absolute(dir).map_err(|e| format!("--modules-dir: {e}"))?;
        let datadir = std::path::absolute(&datadir).map_err(|e| format!("--datadir: {e}"))?;
        std::env::set_current_dir(&datadir)
            .map_err(|e| format!("cannot enter {}: {e}", datadir.display()))?;
        let names = self.names();
        let mut per_module: HashMap<String, HashMap<String, String>> = HashMap::new();
        // `[modules.NAME]` tables: every `--module-config` goes to every `--module` (normally one).
        for name in &names {
            per_module.insert(name.clone(), self.config.iter().cloned().collect());
        }
        config.modules = Some(ModuleConfig {
            enabled: true,
            modules_dir: modules_dir.display().to_string(),
            data_dir: datadir.join("modules/data").display().to_string(),
            socket_dir: datadir.join("modules/sockets").display().to_string(),
            enabled_modules: names.iter().map(|n| (n.clone(), "*".to_owned())).collect(),
            disabled_modules: Vec::new(),
            registry_url: None,
            module_configs: per_module,
            watch_enabled: false,
            ..ModuleConfig::default()
        });
        Ok(datadir)
    }

    pub fn print(&self, datadir: &Path) {
        if self.modules_dir.is_some() {
            println!("modules-socket {}", datadir.join("modules/sockets/node.sock").display());
            println!("modules-data {}", datadir.join("modules/data").display());
        }
    }
}
