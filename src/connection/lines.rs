//! The plaintext framing of a line-based protocol (Stratum V1): messages end with `\n` (a
//! `\r` before it is dropped), and a line may not be longer than a fixed maximum, so a peer
//! that never sends a newline cannot make us hold more than that.
//!
//! Bytes go in as they come ([`LineReceiver::feed`]); whole lines come out one at a time
//! ([`LineReceiver::next_line`]) as slices of the receive buffer, which keeps its capacity
//! across lines (up to what [`LineReceiver::release_spare`] leaves it).

/// A line longer than the maximum (the connection ends: there is no resynchronising on a
/// line we did not take whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max} bytes")]
pub struct LineTooLong {
    /// The maximum line length, newline excluded.
    pub max: usize,
}

/// Splits received bytes into lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineReceiver {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    start: usize,
    max: usize,
}

impl LineReceiver {
    /// A receiver of lines of at most `max` bytes (the newline and a `\r` before it excluded).
    pub fn new(max: usize) -> Self {
        LineReceiver {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 {
            // Lines already handed out are dropped before more bytes are added.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole line, without its `\n` (nor a `\r` before it); `Ok(None)` until one is
    /// whole. A line, whole or not, longer than the maximum is an error.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineTooLong> {
        let rest = &self.buf[self.start..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return if rest.len() > self.max.saturating_add(1) {
                // One byte of slack: a `\r` may still come before the `\n`.
                Err(LineTooLong { max: self.max })
            } else {
                Ok(None)
            };
        };
        let mut line = &rest[..end];
        if let Some((b'\r', head)) = line.split_last() {
            line = head;
        }
        if line.len() > self.max {
            return Err(LineTooLong { max: self.max });
        }
        self.start += end + 1;
        Ok(Some(line))
    }

    /// Gives back capacity beyond `keep` bytes once no partial line needs it.
    pub fn release_spare(&mut self, keep: usize) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.buf.capacity() > keep && self.buf.len() <= keep {
            self.buf.shrink_to(keep);
        }
    }

    /// Bytes held (a partial line, or lines not taken yet).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: &mut LineReceiver) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut out = Vec::new();
        while let Some(l) = r.next_line()? {
            out.push(l.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        let mut r = LineReceiver::new(16);
        r.feed(b"ab");
        assert_eq!(lines(&mut r).unwrap(), Vec::<Vec<u8>>::new());
        r.feed(b"c\r\nde\n\nf");
        assert_eq!(
            lines(&mut r).unwrap(),
            vec![b"abc".to_vec(), b"de".to_vec(), b"".to_vec()]
        );
        assert_eq!(r.buffered(), 1);
        r.feed(b"g\n");
        assert_eq!(lines(&mut r).unwrap(), vec![b"fg".to_vec()]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn a_line_at_the_maximum_passes_one_byte_more_does_not() {
        let mut r = LineReceiver::new(4);
        r.feed(b"1234\r\n");
        assert_eq!(lines(&mut r).unwrap(), vec![b"1234".to_vec()]);
        r.feed(b"12345\n");
        assert_eq!(r.next_line(), Err(LineTooLong { max: 4 }));
    }

    /// A peer that never sends a newline is refused once it passes the maximum, not when
    /// it stops.
    #[test]
    fn an_endless_line_is_refused_early() {
        let mut r = LineReceiver::new(8);
        r.feed(b"12345678\r");
        assert_eq!(r.next_line(), Ok(None));
        r.feed(b"x");
        assert_eq!(r.next_line(), Err(LineTooLong { max: 8 }));
    }

    #[test]
    fn spare_capacity_is_given_back() {
        let mut r = LineReceiver::new(100_000);
        r.feed(&[b'x'; 50_000]);
        r.feed(b"\n");
        assert_eq!(lines(&mut r).unwrap().len(), 1);
        r.release_spare(4096);
        assert!(r.buf.capacity() <= 4096);
    }
}
