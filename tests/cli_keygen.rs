//! `blvm-stratum-v2 keygen` writes a loadable 0600 key, prints its public key, and refuses
//! to overwrite.

use std::process::Command;

use blvm_stratum_v2::noise::keys::{decode_public_key, read_secret_key_file};

#[test]
fn keygen_writes_prints_and_refuses_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("authority_secret_key");
    let bin = env!("CARGO_BIN_EXE_blvm-stratum-v2");

    let run = Command::new(bin)
        .args(["keygen", "--out"])
        .arg(&out)
        .output()
        .expect("run keygen");
    assert!(run.status.success());
    let printed = String::from_utf8(run.stdout).expect("utf8");
    let public = decode_public_key(printed.trim()).expect("prints a public key");
    let secret = read_secret_key_file(&out).expect("key file loads");
    assert_eq!(secret.x_only_public_key().0, public);

    let again = Command::new(bin)
        .args(["keygen", "--out"])
        .arg(&out)
        .output()
        .expect("run keygen");
    assert!(!again.status.success());
    assert_eq!(read_secret_key_file(&out).expect("unchanged"), secret);
}
