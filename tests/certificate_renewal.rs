//! The server certificate is renewed in time whatever `cert_validity_sec` is: with a 2 s
//! certificate, a handshake 5 s after start (checked by SRI's initiator, which allows no clock
//! leeway) still sees a valid one. The renewal rule itself is unit-tested in
//! src/mining/pool/certificate.rs (120 s and a year).

#[path = "common/sri_client.rs"]
mod sri_client;

use std::sync::Arc;
use std::time::Duration;

use blvm_stratum_v2::config::{PoolConfig, PoolOptions};
use blvm_stratum_v2::node::regtest::{ChainConfig, EmbeddedNode};
use blvm_stratum_v2::server::StratumV2Server;
use sri_client::SriConn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_before_it_runs_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = PoolOptions {
        listen_addr: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
        cert_validity_sec: Some(2),
        ..PoolOptions::default()
    };
    let config = PoolConfig::resolve(&opts, "test").expect("valid test config");
    let node = Arc::new(EmbeddedNode::new(ChainConfig::default()));
    let server = StratumV2Server::new(config, node).expect("server");
    let addr = server.start().await.expect("server starts");
    let key = server.authority_public_key().to_owned();

    SriConn::connect(addr, &key)
        .await
        .expect("handshake at start");
    for second in 1..=5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        SriConn::connect(addr, &key)
            .await
            .unwrap_or_else(|e| panic!("handshake {second} s after start: {e}"));
    }
    server.stop().await.expect("clean stop");
}
