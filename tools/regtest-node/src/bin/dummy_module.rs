//! A stand-in module for checking regtest-node's module host mode (not the pool's module client).
//!
//! The node spawns it like any module. It appends what it sees to `$DATA_DIR/dummy.log`, one
//! line each: `start`, `env KEY=VALUE` for MODULE_NAME, MODULE_ID, SOCKET_PATH, DATA_DIR and every
//! MODULE_CONFIG_*, `limit ...` (its rlimits), then, over blvm-node's own IPC client,
//! `handshake ...`, `template ...`, `subscribe ...`, optionally `submit ...`, and `event ...` for
//! each event until it exits. Knobs (as `--module-config key=value`):
//! `stdout_bytes=N` writes N bytes to stdout first and logs `stdout-done N` after;
//! `connect_delay_ms=N` waits before connecting; `submit=1` mines the template (regtest target)
//! and submits it over IPC (the template's coinbase gets the BIP34 height its empty scriptSig
//! lacks and, unless `keep_commitment=1`, loses its witness commitment output, which IPC
//! SubmitBlock cannot satisfy: it sends no witnesses); `exit_after_ms=N` + `exit_code=C` exits
//! with C after N ms;
//! `handshake_name=1` handshakes with `module_id = MODULE_NAME` instead of `MODULE_ID` (the node
//! checks permissions under the handshake id but registers them under the name).

use std::io::Write;
use std::time::Duration;

use blvm_node::module::ipc::protocol::{
    MessageType, ModuleMessage, RequestMessage, RequestPayload, ResponsePayload,
};
use blvm_node::module::ipc::ModuleIpcClient;
use blvm_node::module::traits::EventType;
use blvm_node::Block;

fn log(line: &str) {
    let dir = std::env::var("DATA_DIR").unwrap_or_else(|_| ".".into());
    let path = std::path::Path::new(&dir).join("dummy.log");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

fn knob(key: &str) -> Option<u64> {
    std::env::var(format!("MODULE_CONFIG_{}", key.to_uppercase())).ok()?.parse().ok()
}

async fn request(
    client: &mut ModuleIpcClient,
    id: u64,
    request_type: MessageType,
    payload: RequestPayload,
) -> Result<blvm_node::module::ipc::protocol::ResponseMessage, String> {
    let req = RequestMessage {
        correlation_id: id,
        request_type,
        payload,
    };
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("error {e}")),
        Err(_) => Err("timeout 10s".into()),
    }
}

/// BIP34 coinbase scriptSig: the minimal push of `height`, then a tag byte (>= 2 bytes).
fn bip34_script_sig(height: u64) -> Vec<u8> {
    let mut script = match height {
        0 => vec![0x00],
        1..=16 => vec![0x50 + height as u8],
        _ => {
            let mut raw: Vec<u8> = height.to_le_bytes().into_iter().collect();
            while raw.last() == Some(&0) {
                raw.pop();
            }
            if raw.last().is_some_and(|b| b & 0x80 != 0) {
                raw.push(0);
            }
            let mut s = vec![raw.len() as u8];
            s.extend(raw);
            s
        }
    };
    script.push(0xff);
    script
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    log(&format!("start pid {}", std::process::id()));
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("MODULE_") || k == "SOCKET_PATH" || k == "DATA_DIR" || k.starts_with("BLVM_")
        })
        .collect();
    env.sort();
    for (k, v) in env {
        log(&format!("env {k}={v}"));
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        for l in limits.lines().filter(|l| {
            l.starts_with("Max address space") || l.starts_with("Max open files") || l.starts_with("Max processes")
        }) {
            log(&format!("limit {}", l.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
    }
    if let Some(exit_after) = knob("exit_after_ms") {
        let code = knob("exit_code").unwrap_or(1) as i32;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(exit_after)).await;
            log(&format!("exit {code}"));
            std::process::exit(code);
        });
    }
    if let Some(n) = knob("stdout_bytes") {
        // Blocking writes: a pipe nobody reads stops this after 64 KiB.
        let chunk = vec![b'x'; 1024];
        let mut out = std::io::stdout().lock();
        let mut written = 0u64;
        while written < n {
            let _ = out.write_all(&chunk);
            written += chunk.len() as u64;
        }
        let _ = out.flush();
        log(&format!("stdout-done {written}"));
    }
    if let Some(ms) = knob("connect_delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    let socket = std::env::var("SOCKET_PATH").unwrap_or_default();
    let module_id = if knob("handshake_name") == Some(1) {
        std::env::var("MODULE_NAME").unwrap_or_default()
    } else {
        std::env::var("MODULE_ID").unwrap_or_default()
    };
    let mut client = match ModuleIpcClient::connect(&socket).await {
        Ok(c) => c,
        Err(e) => {
            log(&format!("connect error {e}"));
            return;
        }
    };
    log("connected");
    match request(
        &mut client,
        1,
        MessageType::Handshake,
        RequestPayload::Handshake {
            module_id: module_id.clone(),
            module_name: std::env::var("MODULE_NAME").unwrap_or_default(),
            version: "0.1.0".into(),
        },
    )
    .await
    {
        Ok(r) => log(&format!("handshake success={} payload={:?} error={:?}", r.success, r.payload, r.error)),
        Err(e) => {
            log(&format!("handshake {e}"));
            // Keep the process alive so the test can see it is stuck, not dead.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
    }

    let template = request(
        &mut client,
        2,
        MessageType::GetBlockTemplate,
        RequestPayload::GetBlockTemplate {
            rules: vec!["segwit".into()],
            coinbase_script: None,
            coinbase_address: None,
        },
    )
    .await;
    let mut block = None;
    match template {
        Ok(r) => match r.payload {
            Some(ResponsePayload::BlockTemplate(t)) => {
                log(&format!(
                    "template success={} height={} txs={} bits={:#x} target={}",
                    r.success,
                    t.height,
                    t.transactions.len(),
                    t.header.bits,
                    t.target.gbt_target_hex()
                ));
                let mut coinbase = t.coinbase_tx.clone();
                coinbase.inputs[0].script_sig = bip34_script_sig(t.height);
                if knob("keep_commitment") != Some(1) {
                    // OP_RETURN OP_PUSH36 aa21a9ed...: BIP141 witness commitment.
                    coinbase
                        .outputs
                        .retain(|o| !o.script_pubkey.starts_with(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]));
                }
                let mut txs = vec![coinbase];
                txs.extend(t.transactions.iter().filter(|tx| **tx != t.coinbase_tx).cloned());
                let mut header = t.header.clone();
                header.merkle_root =
                    blvm_protocol::mining::calculate_merkle_root(&txs).expect("merkle root");
                while !blvm_protocol::pow::check_proof_of_work(&header).unwrap_or(false) {
                    header.nonce += 1;
                }
                block = Some(Block::from_parts(header, txs.into_boxed_slice()));
            }
            other => log(&format!("template success={} payload={other:?} error={:?}", r.success, r.error)),
        },
        Err(e) => log(&format!("template {e}")),
    }

    let sub = request(
        &mut client,
        3,
        MessageType::SubscribeEvents,
        RequestPayload::SubscribeEvents {
            event_types: vec![
                EventType::NewBlock,
                EventType::BlockDisconnected,
                EventType::ChainReorg,
                EventType::BlockMined,
                EventType::BlockTemplateUpdated,
                EventType::MiningDifficultyChanged,
            ],
        },
    )
    .await;
    match sub {
        Ok(r) => log(&format!("subscribe success={} payload={:?} error={:?}", r.success, r.payload, r.error)),
        Err(e) => log(&format!("subscribe {e}")),
    }

    if knob("submit") == Some(1) {
        if let Some(block) = block {
            // blvm-node's client takes the next frame as the response: an event that overtakes
            // it shows up here as an error, and the response itself as a `message` line below.
            match request(&mut client, 4, MessageType::SubmitBlock, RequestPayload::SubmitBlock { block })
                .await
            {
                Ok(r) => log(&format!("submit success={} payload={:?} error={:?}", r.success, r.payload, r.error)),
                Err(e) => log(&format!("submit {e}")),
            }
        }
    }

    loop {
        match client.receive_message().await {
            Ok(Some(ModuleMessage::Event(e))) => log(&format!("event {:?} {:?}", e.event_type, e.payload)),
            Ok(Some(other)) => log(&format!("message {other:?}")),
            Ok(None) => {
                log("disconnected");
                return;
            }
            Err(e) => {
                log(&format!("receive error {e}"));
                return;
            }
        }
    }
}
