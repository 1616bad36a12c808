//! Noise NX handshake and encrypted transport (Stratum V2 spec chapter 04).
