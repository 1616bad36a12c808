//! The pool behind Debian's HAProxy with the PROXY protocol v2 (issue 18, item 3).

#[path = "common/haproxy.rs"]
mod haproxy;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use haproxy::{Haproxy, Route, connect_from};

const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The helper itself: HAProxy sends each server a PROXY v2 header carrying the client's
/// address, and health checks that are PROXY v2 LOCAL headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sends_proxy_v2_headers_and_local_health_checks() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let lb = Haproxy::start(&[Route::new("sv2", &[addr])]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in server.incoming() {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut fixed = [0u8; 16];
            if s.read_exact(&mut fixed).is_err() {
                continue;
            }
            let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
            let mut rest = vec![0u8; len];
            let _ = s.read_exact(&mut rest);
            let _ = tx.send((fixed, rest));
        }
    });
    let _client = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), lb.frontend("sv2")).await;
    let (mut local, mut proxied) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (local < 2 || proxied < 1) && std::time::Instant::now() < deadline {
        let Ok((fixed, rest)) = rx.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        assert_eq!(&fixed[..12], SIGNATURE, "{}", lb.log());
        match fixed[12] {
            0x20 => local += 1,
            0x21 => {
                if rest[..4] == [127, 0, 0, 2] {
                    proxied += 1;
                }
            }
            other => panic!("version/command {other:#x}"),
        }
    }
    assert!(
        local >= 2 && proxied >= 1,
        "{local} checks, {proxied} proxied; {}",
        lb.log()
    );
    lb.wait_server("sv20", true, Duration::from_secs(5));
}
