//! Bytes blvm-node's own types made for its module IPC messages
//! (tests/data/blvm_ipc_vectors.txt, from tools/regtest-node's ipc_vectors binary). Include it
//! with `#[path = "common/ipc_vectors.rs"] mod ipc_vectors;`.
#![allow(dead_code)]

use std::collections::HashMap;

/// Every vector by name.
pub fn vectors() -> HashMap<String, Vec<u8>> {
    include_str!("../data/blvm_ipc_vectors.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, hex) = l.split_once(' ').expect("name hex");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (name.to_owned(), bytes)
        })
        .collect()
}

/// One vector.
pub fn vector(name: &str) -> Vec<u8> {
    vectors()
        .remove(name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}
