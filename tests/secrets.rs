//! Secrets from files and environment variables (issue 14, item 8): secret files are opened
//! without following symbolic links and refused when another user owns them or group or
//! others may access them; the environment and the files fill in what the configuration
//! leaves unset; the flags that carry secrets say in `--help` that other users see them.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use blvm_stratum_v2::config::secrets::{
    AUTHORITY_SECRET_KEY_ENV, RPC_PASSWORD_ENV, SecretFileError, read_secret_file,
};
use blvm_stratum_v2::config::{ConfigError, PoolOptions};
use blvm_stratum_v2::noise::keys;

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn a_private_file_is_read_up_to_its_first_line_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("password");
    write(&path, "s3cret\nignored\n", 0o600);
    assert_eq!(read_secret_file(&path).expect("read"), "s3cret");
    write(&path, "only-line", 0o400);
    assert_eq!(read_secret_file(&path).expect("read"), "only-line");
    write(&path, "\n", 0o600);
    assert!(matches!(
        read_secret_file(&path),
        Err(SecretFileError::Empty { .. })
    ));
}

#[test]
fn group_or_other_access_is_refused_as_ssh_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("password");
    for mode in [0o640, 0o604, 0o620, 0o644, 0o660] {
        write(&path, "s3cret", mode);
        let e = read_secret_file(&path).expect_err("refused");
        assert!(
            matches!(e, SecretFileError::Accessible { mode: m, .. } if m == mode),
            "{mode:o}: {e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}

#[test]
fn a_symbolic_link_is_not_followed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("real");
    write(&target, "s3cret", 0o600);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let e = read_secret_file(&link).expect_err("refused");
    assert!(matches!(e, SecretFileError::SymbolicLink { .. }), "{e}");
    assert!(matches!(
        read_secret_file(dir.path()),
        Err(SecretFileError::NotAFile { .. })
    ));
}

#[test]
fn a_file_of_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot give a file to another user; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("password");
    write(&path, "s3cret", 0o600);
    std::os::unix::fs::chown(&path, Some(4242), None).expect("chown");
    let e = read_secret_file(&path).expect_err("refused");
    assert!(
        matches!(e, SecretFileError::NotOurs { owner: 4242, .. }),
        "{e}"
    );
}

#[test]
fn rpc_password_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rpc_password");
    write(&file, "from-file\n", 0o600);
    let env: HashMap<&str, &str> = [(RPC_PASSWORD_ENV, "from-env")].into();
    let lookup = |k: &str| env.get(k).map(|v| (*v).to_owned());

    let o = PoolOptions::from_toml(
        &format!("rpc_password_file = {:?}", file.display().to_string()),
        Path::new("t.toml"),
    )
    .expect("parse");
    assert_eq!(
        o.clone()
            .with_secrets(lookup)
            .expect("ok")
            .rpc_password
            .as_deref(),
        Some("from-file"),
        "the file named in the configuration wins over the environment"
    );
    let both = PoolOptions {
        rpc_password: Some("inline".into()),
        ..o.clone()
    };
    assert!(matches!(
        both.with_secrets(no_env),
        Err(ConfigError::Invalid {
            key: "rpc_password_file",
            ..
        })
    ));
    let from_env = PoolOptions::default().with_secrets(lookup).expect("ok");
    assert_eq!(from_env.rpc_password.as_deref(), Some("from-env"));
    let inline = PoolOptions {
        rpc_password: Some("inline".into()),
        ..PoolOptions::default()
    };
    assert_eq!(
        inline
            .with_secrets(lookup)
            .expect("ok")
            .rpc_password
            .as_deref(),
        Some("inline")
    );
    write(&file, "from-file\n", 0o644);
    assert!(matches!(
        o.with_secrets(no_env),
        Err(ConfigError::SecretFile {
            key: "rpc_password_file",
            source: SecretFileError::Accessible { .. }
        })
    ));
}

#[test]
fn authority_key_from_the_environment_or_a_checked_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = keys::generate_authority_keypair(&mut rand::thread_rng());
    let text = keys::encode_secret_key(&key.secret_key());
    let env: HashMap<&str, String> = [(AUTHORITY_SECRET_KEY_ENV, text.clone())].into();
    let with_data_dir = PoolOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..PoolOptions::default()
    };
    // The environment.
    let o = with_data_dir
        .clone()
        .with_secrets(|k| env.get(k).cloned())
        .expect("ok");
    assert_eq!(o.authority_secret_key.as_deref(), Some(text.as_str()));
    // No key file yet in the data directory: left to the server, which creates one.
    let o = with_data_dir.clone().with_secrets(no_env).expect("ok");
    assert_eq!(o.authority_secret_key, None);
    // The data directory's key file, as the server wrote it.
    let default_file = dir.path().join(keys::SECRET_KEY_FILE_NAME);
    keys::write_secret_key_file(&default_file, &key).expect("key file");
    let o = with_data_dir.clone().with_secrets(no_env).expect("ok");
    assert_eq!(o.authority_secret_key.as_deref(), Some(text.as_str()));
    // Readable by others: refused, with the file and the fix.
    std::fs::set_permissions(&default_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = with_data_dir.with_secrets(no_env).expect_err("refused");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // A symbolic link as authority_key_path: refused.
    std::fs::set_permissions(&default_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.path().join("key-link");
    std::os::unix::fs::symlink(&default_file, &link).expect("symlink");
    let o = PoolOptions {
        authority_key_path: Some(link),
        ..PoolOptions::default()
    };
    assert!(matches!(
        o.with_secrets(no_env),
        Err(ConfigError::SecretFile {
            key: "authority_key_path",
            source: SecretFileError::SymbolicLink { .. }
        })
    ));
    // A missing authority_key_path is an error (the default file may be missing).
    let o = PoolOptions {
        authority_key_path: Some(dir.path().join("absent")),
        ..PoolOptions::default()
    };
    assert!(matches!(
        o.with_secrets(no_env),
        Err(ConfigError::SecretFile {
            source: SecretFileError::Io { .. },
            ..
        })
    ));
}

#[test]
fn help_says_that_secret_flags_are_visible_to_other_users() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blvm-stratum-v2"))
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "visible to every local user",
        "BLVM_STRATUM_V2_AUTHORITY_SECRET_KEY",
        "BLVM_STRATUM_V2_RPC_PASSWORD",
        "--rpc-password-file",
    ] {
        assert!(help.contains(needle), "`{needle}` not in --help:\n{help}");
    }
}

/// The server reads its key file the same way when a library user configures it directly
/// (no `with_secrets`): a symbolic link or a file others can read is refused.
#[test]
fn the_server_reads_its_key_file_as_a_secret_file() {
    use blvm_stratum_v2::config::PoolConfig;
    use blvm_stratum_v2::server::{ServerConfig, load_authority_key};
    let dir = tempfile::tempdir().expect("temp dir");
    let key = keys::generate_authority_keypair(&mut rand::thread_rng());
    let file = dir.path().join("key");
    keys::write_secret_key_file(&file, &key).expect("key file");
    let link = dir.path().join("key-link");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    let config = |path: &Path| -> ServerConfig {
        let o = PoolOptions {
            data_dir: Some(dir.path().to_path_buf()),
            authority_key_path: Some(path.to_path_buf()),
            ..PoolOptions::default()
        };
        PoolConfig::resolve(&o, "test").expect("config").into()
    };
    let (read, created) = load_authority_key(&config(&file)).expect("the key file");
    assert_eq!(read.secret_key(), key.secret_key());
    assert!(!created);
    let e = load_authority_key(&config(&link)).expect_err("a symbolic link");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let e = load_authority_key(&config(&file)).expect_err("readable by the group");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // The data directory's default key file too.
    std::fs::rename(&file, dir.path().join(keys::SECRET_KEY_FILE_NAME)).expect("rename");
    let o = PoolOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..PoolOptions::default()
    };
    let e = load_authority_key(&PoolConfig::resolve(&o, "test").expect("config").into())
        .expect_err("the default key file, readable by the group");
    assert!(e.to_string().contains("chmod 600"), "{e}");
}
