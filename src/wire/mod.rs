//! The Stratum V2 binary encoding (spec chapter 03, 05, 07, 08 and extension 0x0001).
