//! Authority key text forms are byte-compatible with SRI's `key-utils`, and key files are
//! created 0600, never overwritten, and reloaded to the same key.

use blvm_stratum_v2::noise::keys::{
    KeyError, SECRET_KEY_FILE_NAME, decode_public_key, decode_secret_key, encode_public_key,
    encode_secret_key, generate_authority_keypair, load_or_create, read_secret_key_file,
    write_secret_key_file,
};
use key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[test]
fn spec_test_vector() {
    let raw = [
        118, 99, 112, 0, 151, 156, 28, 17, 175, 12, 48, 11, 205, 140, 127, 228, 134, 16, 252, 233,
        185, 193, 30, 61, 174, 227, 90, 224, 176, 138, 116, 85,
    ];
    let text = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh";
    let key = decode_public_key(text).expect("spec vector decodes");
    assert_eq!(key.serialize(), raw);
    assert_eq!(encode_public_key(&key), text);
}

#[test]
fn sri_pair_from_codec_sv2_tests() {
    // The authority pair hard-coded in codec_sv2's own tests, written by key-utils.
    let public = decode_public_key("9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72")
        .expect("SRI public key");
    let secret = decode_secret_key("mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n")
        .expect("SRI secret key");
    assert_eq!(secret.x_only_public_key().0, public);
}

#[test]
fn key_utils_round_trips_both_ways() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..50 {
        let kp = generate_authority_keypair(&mut rng);

        // Ours -> key-utils.
        let their_secret: Secp256k1SecretKey = encode_secret_key(&kp.secret_key())
            .parse()
            .expect("key-utils reads our secret key");
        assert_eq!(their_secret.into_bytes(), kp.secret_bytes());
        let their_public: Secp256k1PublicKey = encode_public_key(&kp.x_only_public_key().0)
            .parse()
            .expect("key-utils reads our public key");
        assert_eq!(
            their_public.into_bytes(),
            kp.x_only_public_key().0.serialize()
        );

        // key-utils -> ours, byte-identical text.
        let text = their_secret.to_string();
        assert_eq!(text, encode_secret_key(&kp.secret_key()));
        assert_eq!(
            decode_secret_key(&text).expect("we read key-utils' secret key"),
            kp
        );
        let text = Secp256k1PublicKey::from(their_secret).to_string();
        assert_eq!(text, encode_public_key(&kp.x_only_public_key().0));
        assert_eq!(
            decode_public_key(&text).expect("we read key-utils' public key"),
            kp.x_only_public_key().0
        );
    }
}

#[test]
fn bad_text_is_a_typed_error() {
    let good = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh";
    let mut typo = good.to_string();
    typo.replace_range(5..6, "x");
    assert!(matches!(decode_public_key(&typo), Err(KeyError::Base58(_))));
    assert!(matches!(
        decode_public_key("0OIl"),
        Err(KeyError::Base58(_))
    ));
    // A secret key where a public key is expected, and vice versa.
    let secret = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";
    assert!(matches!(
        decode_public_key(secret),
        Err(KeyError::Length {
            expected: 34,
            actual: 32
        })
    ));
    assert!(matches!(
        decode_secret_key(good),
        Err(KeyError::Length {
            expected: 32,
            actual: 34
        })
    ));
    let mut raw = [0u8; 34];
    raw[0] = 2;
    let v2 = bs58::encode(raw).with_check().into_string();
    assert!(matches!(
        decode_public_key(&v2),
        Err(KeyError::UnsupportedVersion(2))
    ));
    let zero = bs58::encode([0u8; 32]).with_check().into_string();
    assert!(matches!(
        decode_secret_key(&zero),
        Err(KeyError::InvalidKey)
    ));
}

#[test]
fn key_file_is_0600_not_overwritten_and_reloads() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("authority.key");
    let mut rng = StdRng::seed_from_u64(4);
    let kp = generate_authority_keypair(&mut rng);
    write_secret_key_file(&path, &kp).expect("write");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(read_secret_key_file(&path).expect("read"), kp);

    let other = generate_authority_keypair(&mut rng);
    assert!(matches!(
        write_secret_key_file(&path, &other),
        Err(KeyError::AlreadyExists(_))
    ));
    assert_eq!(read_secret_key_file(&path).expect("unchanged"), kp);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        read_secret_key_file(&path),
        Err(KeyError::InsecurePermissions { mode: 0o644, .. })
    ));
}

#[test]
fn load_or_create_creates_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("nested").join("data");
    let mut rng = StdRng::seed_from_u64(5);
    let (first, created) = load_or_create(&data, &mut rng).expect("create");
    assert!(created);
    assert!(data.join(SECRET_KEY_FILE_NAME).exists());
    let (second, created) = load_or_create(&data, &mut rng).expect("load");
    assert!(!created);
    assert_eq!(first, second);
}
