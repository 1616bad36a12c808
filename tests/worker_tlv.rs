//! Extension 0x0002, worker-specific hashrate tracking (issue 16 item 2), against a client we
//! did not write: a miner built on SRI's crates negotiates the extension with RequestExtensions
//! (0x0001), then sends shares of several workers on ONE channel, each SubmitSharesExtended
//! carrying the worker's user_identity as a TLV built by SRI's `parsers_sv2`/`extensions_sv2`
//! (as a proxy in front of many machines does). The pool attributes every share to its worker:
//! in the share ledger (a row per share with the TLV's worker) and in the pool's per-worker
//! statistics, and in what the HTTP server shows of them: a `/metrics` series per worker (none
//! for the channel's own worker name) and a row per worker in `/api/v1/workers`. With the
//! metrics' label limit at one, the workers beyond the first are summed under `worker="other"`.

#[path = "common/http_client.rs"]
mod http_client;
#[path = "common/pool.rs"]
mod pool;
#[path = "common/sri_client.rs"]
mod sri_client;

use std::time::Duration;

use binary_sv2::Seq064K;
use blvm_stratum_v2::http::{HttpServer, HttpSettings};
use extensions_sv2::{RequestExtensions, UserIdentity};
use http_client::{client, get_json, matching, one, scrape};
use parsers_sv2::{
    AnyMessage, AnyMessageOwned, Extensions, ExtensionsNegotiation, ExtensionsNegotiationOwned,
    ExtensionsOwned, MiningOwned, TlvField, TlvList,
};
use pool::{RARE_BLOCKS, TestPool};
use sri_client::{Miner, RawFrame};

/// Worker names and how many shares each sends, all on the one channel of user `proxy`.
const WORKERS: [(&str, u32); 3] = [("rig-a", 4), ("rig-b", 3), ("rig-c", 1)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_on_one_channel_are_credited_to_the_workers_their_tlv_names() {
    tokio::time::timeout(Duration::from_secs(120), async {
        // The pool's data dir (its SQLite ledger) outlives the pool, to be read at the end.
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let pool = TestPool::start_with(RARE_BLOCKS, 10, |o| o.data_dir = Some(data_dir)).await;
        let http = HttpServer::start(loopback_http(), pool.server.observer())
            .await
            .expect("HTTP server");
        let base = format!("http://{}", http.local_addr());
        let _miner = send_worker_shares(&pool).await;

        // The pool's per-worker statistics (what /metrics and /api/v1/workers read).
        let total: u32 = WORKERS.iter().map(|(_, n)| n).sum();
        {
            let handle = pool.server.get_pool();
            let pool_state = handle.read().unwrap();
            let workers = pool_state.statistics().workers();
            for (worker, shares) in WORKERS {
                let stats = workers
                    .get("proxy", worker)
                    .unwrap_or_else(|| panic!("{worker} in the worker table"));
                assert_eq!(stats.accepted_shares, u64::from(shares), "{worker}");
                assert!(stats.credited_difficulty > 0.0, "{worker}");
            }
            assert!(
                workers.get("proxy", "farm").is_none(),
                "no share credited to the channel's own worker name"
            );
        }

        // What the HTTP server shows: a /metrics series per worker, none for the channel's
        // own worker name, and a row per worker in /api/v1/workers.
        let c = client();
        let (m, _) = scrape(&c, &base).await;
        for (worker, shares) in WORKERS {
            let labels = [("user", "proxy"), ("worker", worker)];
            assert_eq!(
                one(&m, "blvm_stratum_worker_shares_accepted_total", &labels),
                f64::from(shares),
                "{worker}'s accepted shares in /metrics"
            );
            assert!(
                one(&m, "blvm_stratum_worker_credited_difficulty_total", &labels) > 0.0,
                "{worker}'s credited difficulty in /metrics"
            );
        }
        for name in [
            "blvm_stratum_worker_shares_accepted_total",
            "blvm_stratum_worker_credited_difficulty_total",
            "blvm_stratum_worker_hashrate",
        ] {
            let farm = matching(&m, name, &[("worker", "farm")]);
            assert!(
                farm.is_empty(),
                "the channel's own worker has a series: {farm:?}"
            );
        }
        assert_eq!(
            one(
                &m,
                "blvm_stratum_user_shares_accepted_total",
                &[("user", "proxy")]
            ),
            f64::from(total)
        );
        let listed = get_json(&c, &format!("{base}/api/v1/workers?user=proxy")).await;
        let rows: Vec<(&str, u64)> = listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|w| {
                (
                    w["worker"].as_str().expect("a worker name"),
                    w["accepted_shares"].as_u64().expect("a share count"),
                )
            })
            .collect();
        let expected: Vec<(&str, u64)> = WORKERS.iter().map(|(w, n)| (*w, u64::from(*n))).collect();
        assert_eq!(rows, expected, "{listed}");
        http.stop().await;
        pool.stop().await;

        // The ledger: one row per share, under the TLV's worker.
        let rows = pool::ledger_shares(dir.path());
        for (worker, shares) in WORKERS {
            let stored = rows
                .iter()
                .filter(|s| &*s.record.user == "proxy" && &*s.record.worker == worker)
                .count();
            assert_eq!(stored, shares as usize, "{worker}'s rows");
        }
        assert_eq!(rows.len(), total as usize, "nothing else");
    })
    .await
    .expect("test timed out");
}

/// With `metrics_max_workers = 1`, /metrics labels only the worker seen first; the others'
/// shares are summed under `user="other", worker="other"` (the totals kept), while the JSON
/// API still lists every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_beyond_the_label_limit_are_folded_into_other() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let pool = TestPool::start_with(RARE_BLOCKS, 10, |o| {
            o.http_listen_addr = Some("127.0.0.1:0".into());
            o.metrics_max_workers = Some(1);
        })
        .await;
        let settings = pool.http.clone().expect("the HTTP server is on");
        assert_eq!(settings.max_labelled_workers, 1);
        let http = HttpServer::start(settings, pool.server.observer())
            .await
            .expect("HTTP server");
        let base = format!("http://{}", http.local_addr());
        let _miner = send_worker_shares(&pool).await;

        let c = client();
        let (m, _) = scrape(&c, &base).await;
        let name = "blvm_stratum_worker_shares_accepted_total";
        let labelled: Vec<&str> = m[name]
            .iter()
            .map(|s| s.labels.get("worker").expect("a worker label"))
            .collect();
        assert_eq!(labelled, ["rig-a", "other"], "{:?}", m[name]);
        let (first, first_shares) = WORKERS[0];
        assert_eq!(
            one(&m, name, &[("user", "proxy"), ("worker", first)]),
            f64::from(first_shares)
        );
        let folded: u32 = WORKERS[1..].iter().map(|(_, n)| n).sum();
        assert_eq!(
            one(&m, name, &[("user", "other"), ("worker", "other")]),
            f64::from(folded)
        );
        assert!(
            one(
                &m,
                "blvm_stratum_worker_credited_difficulty_total",
                &[("worker", "other")]
            ) > 0.0
        );
        let listed = get_json(&c, &format!("{base}/api/v1/workers")).await;
        assert_eq!(
            listed["items"].as_array().expect("items").len(),
            WORKERS.len(),
            "the API lists every worker: {listed}"
        );
        http.stop().await;
        pool.stop().await;
    })
    .await
    .expect("test timed out");
}

/// HTTP settings for a test: loopback, an ephemeral port, the default limits.
fn loopback_http() -> HttpSettings {
    HttpSettings {
        listen_addr: "127.0.0.1:0".parse().expect("an address"),
        ..HttpSettings::default()
    }
}

/// Negotiates 0x0002 with SRI's RequestExtensions, opens one extended channel as
/// `proxy.farm` and sends [`WORKERS`]' shares on it, each with its worker's TLV; every one
/// must be accepted, and folded into the pool's statistics before this returns. Returns the
/// miner (its channel stays open).
async fn send_worker_shares(pool: &TestPool) -> Miner {
    let mut miner = Miner::ready(pool.addr, &pool.key, 0).await.expect("set up");

    // Negotiation, with SRI's message.
    let requested = [0x0002u16];
    miner
        .conn
        .send(AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
            ExtensionsNegotiation::RequestExtensions(RequestExtensions {
                request_id: 1,
                requested_extensions: Seq064K::new(requested.to_vec()).unwrap(),
            }),
        )))
        .await
        .expect("sent");
    match miner.recv().await.expect("an answer") {
        AnyMessageOwned::Extensions(ExtensionsOwned::ExtensionsNegotiation(
            ExtensionsNegotiationOwned::RequestExtensionsSuccess(ok),
        )) => {
            assert_eq!(ok.request_id, 1);
            assert_eq!(ok.supported_extensions.into_inner(), vec![0x0002]);
        }
        other => panic!("RequestExtensions answered with {other:?}"),
    }

    let channel = miner.open(true, "proxy.farm").await.expect("channel");
    for (worker, shares) in WORKERS {
        for _ in 0..shares {
            let share = miner.valid_share(channel);
            let (seq, message) = miner.submit_message(&share);
            // SRI builds the frame: the message, then the TLV list.
            let tlv = UserIdentity::new(worker).unwrap().to_tlv().expect("a TLV");
            let frame = TlvList::from_slice(&[tlv])
                .expect("a TLV list")
                .build_frame_bytes_with_tlvs(message)
                .expect("a frame");
            miner.conn.send_frame(RawFrame(frame)).await.expect("sent");
            let answer = miner
                .wait_for(|m| match m {
                    AnyMessageOwned::Mining(MiningOwned::SubmitSharesSuccess(s))
                        if s.last_sequence_number == seq =>
                    {
                        Some(Ok(()))
                    }
                    AnyMessageOwned::Mining(MiningOwned::SubmitSharesError(e))
                        if e.sequence_number == seq =>
                    {
                        Some(Err(
                            String::from_utf8_lossy(e.error_code.as_bytes()).into_owned()
                        ))
                    }
                    _ => None,
                })
                .await
                .expect("an answer");
            assert_eq!(answer, Ok(()), "{worker}'s share");
        }
    }
    let total: u32 = WORKERS.iter().map(|(_, n)| n).sum();
    pool.wait_stats(Duration::from_secs(10), "every share folded in", |s| {
        s.accepted_shares >= u64::from(total)
    })
    .await;
    miner
}
