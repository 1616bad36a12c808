//! Hostile input on the Stratum V1 port over real TCP while an honest SV1 miner (built on SRI's
//! `sv1_api`) and an honest SV2 miner keep mining: each attack ends with the server answering
//! with an error or closing the hostile connection, never harming the others, whose accepted
//! shares keep growing during and after it. Each refusal is counted by reason in the pool's
//! SV1 refusal counts.

#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;
#[path = "common/sv1_client.rs"]
mod sv1_client;

use std::net::SocketAddr;
use std::time::Duration;

use pool::{RARE_BLOCKS, TestPool};
use serde_json::Value;
use sri_client::{HonestMiner, expect_closed};
use sv1_client::HonestSv1Miner;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Handshake and setup (mining.subscribe) timeout of the pool under attack.
const SETUP_SECS: u64 = 2;
/// How long the server may take to close a connection it should close.
const CLOSE_SOON: Duration = Duration::from_secs(5);
const PROGRESS: u64 = 20;
const PROGRESS_WITHIN: Duration = Duration::from_secs(10);
const USER: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.honest";

/// Reads one JSON line from the pool.
async fn read_json(r: &mut BufReader<TcpStream>) -> Value {
    let mut line = String::new();
    let n = timeout(CLOSE_SOON, r.read_line(&mut line))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(n > 0, "closed before answering");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn code(v: &Value) -> i64 {
    v["error"][0]
        .as_i64()
        .unwrap_or_else(|| panic!("an error answer: {v}"))
}

struct Rig {
    pool: TestPool,
    sv1: SocketAddr,
    honest_sv1: HonestSv1Miner,
    honest_sv2: HonestMiner,
}

impl Rig {
    async fn start() -> Rig {
        let pool = TestPool::start(RARE_BLOCKS, SETUP_SECS).await;
        let sv1 = pool.sv1_addr.expect("an SV1 listener");
        let honest_sv1 = HonestSv1Miner::start(sv1, USER).await;
        let honest_sv2 = HonestMiner::start(pool.addr, &pool.key).await;
        let rig = Rig {
            pool,
            sv1,
            honest_sv1,
            honest_sv2,
        };
        rig.progress("before the attacks").await;
        rig
    }

    async fn progress(&self, when: &str) {
        self.honest_sv1
            .assert_progress(PROGRESS, PROGRESS_WITHIN, when)
            .await;
        self.honest_sv2
            .assert_progress(PROGRESS, PROGRESS_WITHIN, when)
            .await;
    }

    async fn connect(&self) -> BufReader<TcpStream> {
        BufReader::new(TcpStream::connect(self.sv1).await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sv1_input_is_refused_while_honest_miners_mine() {
    timeout(Duration::from_secs(120), async {
        let rig = Rig::start().await;

        // A line that never ends: closed once it passes the maximum.
        let mut c = rig.connect().await;
        let _ = c.get_mut().write_all(&vec![b'a'; 16 * 1024]).await;
        expect_closed(c.get_mut(), CLOSE_SOON, "an endless line").await;
        rig.progress("after an endless line").await;

        // Not JSON: an error with id null, then the end.
        let mut c = rig.connect().await;
        c.get_mut().write_all(b"{this is not json\n").await.unwrap();
        let answer = read_json(&mut c).await;
        assert!(answer["id"].is_null() && code(&answer) == 20, "{answer}");
        expect_closed(c.get_mut(), CLOSE_SOON, "not JSON").await;

        // Binary garbage (a Noise handshake's first message) on the SV1 port: no line, no
        // subscribe, closed at the setup timeout.
        let mut c = rig.connect().await;
        c.get_mut().write_all(&[0x5a; 64]).await.unwrap();
        expect_closed(c.get_mut(), CLOSE_SOON, "a Noise handshake").await;
        rig.progress("after garbage").await;

        // Out of order and malformed requests are answered with their codes and the
        // connection goes on; a flood of them closes it.
        let mut c = rig.connect().await;
        let requests = [
            (r#"{"id":1,"method":"mining.submit","params":["u","1","00","00000000","00000000"]}"#, 25),
            (r#"{"id":2,"method":"mining.authorize","params":["u","x"]}"#, 25),
            (r#"{"id":3,"method":"mining.subscribe","params":[]}"#, 0),
            (r#"{"id":4,"method":"mining.submit","params":["u","1","00","00000000","00000000"]}"#, 24),
            (r#"{"id":5,"method":"mining.authorize","params":["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kdl3v7t.x","x"]}"#, 24),
            (r#"{"id":6,"method":"mining.submit","params":[1,2,3]}"#, 20),
            (r#"{"id":7,"method":"mining.nonsense"}"#, 20),
        ];
        for (line, expected) in requests {
            c.get_mut().write_all(line.as_bytes()).await.unwrap();
            c.get_mut().write_all(b"\n").await.unwrap();
            let answer = read_json(&mut c).await;
            if expected == 0 {
                assert!(answer["error"].is_null(), "{answer}");
            } else {
                assert_eq!(code(&answer), expected, "{line}: {answer}");
            }
        }
        let flood: String = (0..200)
            .map(|i| format!("{{\"id\":{},\"method\":\"x\"}}\n", 100 + i))
            .collect();
        let _ = c.get_mut().write_all(flood.as_bytes()).await;
        expect_closed(c.get_mut(), CLOSE_SOON, "a flood of bad requests").await;
        rig.progress("after bad requests").await;

        // Many connections that never subscribe: each closed at the setup timeout.
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(TcpStream::connect(rig.sv1).await.unwrap());
        }
        rig.progress("with 100 silent connections").await;
        for mut s in idle {
            expect_closed(&mut s, CLOSE_SOON, "a connection that never subscribes").await;
        }
        rig.progress("after the silent connections").await;

        let stats = rig.pool.stats().await;
        assert_eq!(stats.blocks_rejected, 0, "{stats:?}");
        // Every refusal of the SV1 layer is in the pool's counts (the JSON API and /metrics
        // read these), by reason.
        let refused: std::collections::HashMap<&str, u64> = rig
            .pool
            .server
            .observer()
            .sv1_refusals()
            .into_iter()
            .map(|(r, n)| (r.name(), n))
            .collect();
        for (reason, at_least) in [
            ("line-too-long", 1),
            ("invalid-json", 1),
            ("not-subscribed", 2),
            ("unauthorized", 1),
            ("invalid-params", 1),
            ("unknown-method", 60),
            ("too-many-bad-requests", 1),
        ] {
            assert!(refused[reason] >= at_least, "{reason}: {refused:?}");
        }
        // The mainnet address is refused by the channel's opening, counted as SV2's are.
        let channel_refusals = rig
            .pool
            .server
            .observer()
            .refusals()
            .into_iter()
            .find(|(r, _)| r.label() == "channel_refused")
            .map_or(0, |(_, n)| n);
        assert!(channel_refusals >= 1);
        drop(rig.honest_sv1);
        rig.honest_sv2.finish().await;
        rig.pool.stop().await;
    })
    .await
    .expect("test timed out");
}
