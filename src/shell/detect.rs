//! The shell's side of one port for both protocols (`sv1_on_sv2_port`): read a connection's
//! first bytes, within a bounded time, until the sans-IO classifier
//! ([`crate::connection::detect`]) can say which protocol they are; the bytes read are then
//! the first input of that protocol's connection (`first` of [`super::drive`]), not lost.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::connection::{DETECT_LEN, Detected, detect};

/// Why no protocol could be told.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The peer closed before sending enough to tell.
    #[error("closed before its protocol could be told")]
    Closed,
    /// Not enough bytes came within the time allowed.
    #[error("too few bytes to tell its protocol in time")]
    Timeout,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads from `stream` until its protocol is told, for at most `within`; returns it and the
/// bytes read (at most [`DETECT_LEN`] plus one read: a Noise message usually comes whole).
pub async fn detect_protocol(
    stream: &mut TcpStream,
    within: Duration,
) -> Result<(Detected, Vec<u8>), DetectError> {
    let mut first = Vec::with_capacity(2 * DETECT_LEN);
    let reading = async {
        let mut buf = [0u8; 128];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(DetectError::Closed);
            }
            first.extend_from_slice(&buf[..n]);
            if let Some(d) = detect(&first) {
                return Ok(d);
            }
        }
    };
    let detected = tokio::time::timeout(within, reading)
        .await
        .map_err(|_| DetectError::Timeout)??;
    Ok((detected, first))
}
