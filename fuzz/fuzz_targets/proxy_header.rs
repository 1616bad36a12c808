//! Arbitrary bytes as what a trusted load balancer sends first, through the PROXY v2 header
//! reader's steps in its order (`shell::proxy_protocol::read_header`): the sniff of every
//! prefix as the bytes arrive, the fixed part's announced length, then the whole header.
//! Nothing may panic; the announced length stays within its bound; a header that parses never
//! depends on a byte past the length it announced; a proxied address is never IPv4-mapped.

#![no_main]

use blvm_stratum_v2::shell::proxy_header::{
    self, FIXED_LEN, MAX_PAYLOAD, ProxyHeader, ProxyHeaderError, Sniff,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The reader gives up at the first prefix that cannot start a header.
    for n in 0..=data.len().min(FIXED_LEN) {
        if proxy_header::sniff(&data[..n]) == Sniff::Other {
            assert_eq!(
                proxy_header::parse(data),
                Err(ProxyHeaderError::Missing),
                "a refused prefix is a missing header"
            );
            return;
        }
    }
    let Some(fixed) = data.first_chunk::<FIXED_LEN>() else {
        assert!(proxy_header::parse(data).is_err());
        return;
    };
    let len = match proxy_header::payload_len(fixed) {
        Ok(len) => len,
        Err(e) => {
            assert_eq!(proxy_header::parse(data), Err(e));
            return;
        }
    };
    assert!(len <= MAX_PAYLOAD);
    let parsed = proxy_header::parse(data);
    if data.len() >= FIXED_LEN + len {
        assert_eq!(parsed, proxy_header::parse(&data[..FIXED_LEN + len]));
    }
    if let Ok(ProxyHeader::Proxied(addr)) = parsed {
        assert_eq!(addr.ip(), addr.ip().to_canonical());
    }
});
