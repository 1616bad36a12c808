//! A fake JSON-RPC node on 127.0.0.1 for the tests of the pool's own behaviour around a node
//! (the chain it says it is on, its going away): it answers the few calls the pool makes with a
//! template on a fixed tip, over plain HTTP/1.1 keep-alive. Not a chain: the real node's tests
//! use tools/regtest-node. Include it with `#[path = "common/fake_rpc_node.rs"] mod fake_rpc_node;`.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The fixed tip every answer is about.
pub const TIP: &str = "00000000000000000000000000000000000000000000000000000000000000cc";

/// What the fake node says of itself.
#[derive(Debug, Clone, Copy)]
pub struct FakeNode {
    /// `getblockchaininfo`'s chain: "main", "test", "regtest" ...
    pub chain: &'static str,
    /// The template's nBits, hex.
    pub bits: &'static str,
    /// The template's coinbase value (satoshis).
    pub coinbase_value: u64,
}

impl FakeNode {
    /// Serves on 127.0.0.1 until the test ends; while `down` is set, every request's
    /// connection is closed unanswered. Returns its URL.
    pub async fn serve(self, down: Arc<AtomicBool>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let down = down.clone();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(stream);
                    while let Some(body) = read_request(&mut conn).await {
                        if down.load(Ordering::SeqCst) {
                            return;
                        }
                        let text = self.answer(&body).to_string();
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                            text.len()
                        );
                        if conn.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    /// The JSON-RPC answer to one request body.
    fn answer(&self, body: &[u8]) -> Value {
        let req: Value = serde_json::from_slice(body).unwrap_or_default();
        let result = match req["method"].as_str().unwrap_or_default() {
            "getblockchaininfo" => json!({"chain": self.chain, "blocks": 5}),
            "getbestblockhash" => json!(TIP),
            "getblockcount" => json!(5),
            "getblockheader" => json!({"height": 5}),
            "getblocktemplate" => json!({
                "version": 0x2000_0000, "rules": ["segwit"],
                "previousblockhash": TIP, "transactions": [],
                "coinbasevalue": self.coinbase_value, "mintime": 1, "curtime": 2,
                "bits": self.bits, "height": 6,
            }),
            _ => Value::Null,
        };
        json!({"result": result, "error": null, "id": req["id"]})
    }
}

/// One HTTP request's body (headers read up to the blank line, then Content-Length bytes);
/// `None` when the connection ends.
async fn read_request(conn: &mut BufReader<tokio::net::TcpStream>) -> Option<Vec<u8>> {
    let mut len = 0;
    loop {
        let mut line = String::new();
        match conn.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.ok()?;
    Some(body)
}
