//! One port for both protocols (`sv1_on_sv2_port`): the first bytes tell a Stratum V1 miner
//! (`{` and 15 printable bytes) from a Stratum V2 one (the Noise initiator's 64 ElligatorSwift
//! bytes, uniformly random-looking).
//!
//! - Property: initiator messages from our Noise initiator and from SRI's `noise_sv2`
//!   initiator, many of each, are all classified SV2, and about 1/256 of them start with `{`
//!   (so the samples do exercise the rest of the rule, not just its first byte).
//! - Every line SRI's `sv1_api` client builds is classified SV1 from its 16th byte, and
//!   undecided before.
//! - End to end: an SRI SV2 client and an `sv1_api` client mine on the same port at once; a
//!   connection that sends `{"id` and nothing more is closed at the setup timeout.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;
#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::time::Duration;

use blvm_stratum_v2::connection::{DETECT_LEN, Detected, MISREAD_PROBABILITY, detect};
use blvm_stratum_v2::noise::Initiator;
use codec_sv2::Handshake;
use pool::{RARE_BLOCKS, TestPool};
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::{Keypair, SECP256K1};
use sri_client::{HonestMiner, expect_closed};
use sv1_api::methods::client_to_server;
use sv1_api::utils::{Extranonce, HexU32Be};
use sv1_api::{ClientStatus, IsClient};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Initiator messages per implementation.
const SAMPLES: usize = 20_000;
const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.sv1rig";

/// Classifies `message`, fed whole and byte by byte (as a slow socket would deliver it).
fn classify(message: &[u8]) -> Detected {
    let whole = detect(message).expect("64 bytes decide");
    let stepwise = (1..=message.len())
        .find_map(|n| detect(&message[..n]))
        .expect("decided within the message");
    assert_eq!(whole, stepwise);
    whole
}

#[test]
fn noise_initiator_messages_of_both_implementations_are_stratum_v2() {
    const { assert!(MISREAD_PROBABILITY < 1.4e-9) };
    let mut rng = StdRng::seed_from_u64(17);
    let authority = Keypair::new(SECP256K1, &mut rng);
    let mut brace = 0;
    for _ in 0..SAMPLES {
        let ours = Initiator::new(authority.x_only_public_key().0, &mut rng).step_0();
        assert_eq!(ours.len(), 64);
        assert_eq!(classify(&ours), Detected::StratumV2, "ours: {ours:02x?}");
        brace += usize::from(ours[0] == b'{');

        let sri_authority =
            noise_sv2::Initiator::from_raw_k(authority.x_only_public_key().0.serialize())
                .expect("valid authority key");
        let (msg0, _) = Handshake::initiator(sri_authority)
            .step_0()
            .expect("SRI step 0");
        let sri = msg0.payload();
        assert_eq!(sri.len(), 64);
        assert_eq!(classify(sri), Detected::StratumV2, "SRI's: {sri:02x?}");
        brace += usize::from(sri[0] == b'{');
    }
    // 2 × 20,000 / 256 = 156 expected; the bounds are more than six standard deviations away.
    assert!(
        (80..=240).contains(&brace),
        "{brace} messages start with '{{'"
    );
}

#[test]
fn every_line_sv1_api_builds_is_stratum_v1() {
    let mut miner = sv1_client::Sv1Miner {
        version_rolling_mask: Some(HexU32Be(sv1_client::MASK)),
        version_rolling_min_bit: Some(HexU32Be(2)),
        ..sv1_client::Sv1Miner::default()
    };
    let mut lines = vec![miner.configure(None, 1).unwrap()];
    miner.status = Some(ClientStatus::Configured);
    lines.push(miner.subscribe(None, 2, None).unwrap());
    lines.push(miner.authorize(None, 3, USER.into(), "x".into()).unwrap());
    lines.push(
        client_to_server::Submit {
            user_name: USER.into(),
            job_id: "1f".into(),
            extra_nonce2: Extranonce::try_from(vec![2u8; 8]).unwrap(),
            time: HexU32Be(0x6000_0000),
            nonce: HexU32Be(12345),
            version_bits: Some(HexU32Be(0x2000)),
            id: 4,
        }
        .into(),
    );
    for message in lines {
        let mut text = serde_json::to_string(&message).unwrap();
        text.push('\n');
        let bytes = text.as_bytes();
        assert!(bytes.len() > DETECT_LEN, "{text}");
        for n in 0..DETECT_LEN {
            assert_eq!(detect(&bytes[..n]), None, "{n} bytes of {text}");
        }
        for n in DETECT_LEN..=bytes.len() {
            assert_eq!(detect(&bytes[..n]), Some(Detected::StratumV1), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sri_sv2_client_and_an_sv1_api_client_mine_on_the_same_port() {
    let pool = TestPool::start_with(RARE_BLOCKS, 2, |o| {
        o.sv1_on_sv2_port = Some(true);
        o.sv1_listen_addr = Some("off".into());
    })
    .await;
    assert_eq!(pool.sv1_addr, None, "no SV1 port of its own");
    let sv2 = HonestMiner::start(pool.addr, &pool.key).await;
    let mut sv1 = sv1_client::connect(pool.addr, USER).await;
    sv1.mine(10).await;
    sv2.assert_progress(20, Duration::from_secs(20), "beside the SV1 miner")
        .await;
    sv1.mine(20).await;
    assert!(sv1.miner.refused.is_empty(), "{:?}", sv1.miner.refused);
    let sv2_accepted = sv2.finish().await;
    pool.wait_stats(Duration::from_secs(5), "both miners' shares", |s| {
        s.accepted_shares >= 20 + sv2_accepted
    })
    .await;

    // Too few bytes to tell the protocol: closed at the setup timeout (2 s).
    let mut slow = TcpStream::connect(pool.addr).await.unwrap();
    slow.write_all(b"{\"id").await.unwrap();
    expect_closed(&mut slow, Duration::from_secs(5), "undecided first bytes").await;
    pool.stop().await;
}
