//! Which version bits an SV1 miner may roll on a job: BIP310's negotiated mask, less the bits
//! the job's version already sets.
//!
//! Why the mask narrows per job: a miner rolling a bit writes its own value there, so a bit the
//! template sets (a deployment the node signals for, e.g. regtest's `testdummy` on bit 28, or
//! a deployment on bits 5 to 12, which BIP320's narrower range left to BIP9) would be cleared
//! in about half of the blocks the miner finds: the pool would stop signalling what its
//! operator's node signals. Kept out of the mask, the bit stays as the template has it. When
//! the template stops setting it (the deployment locked in), the bit is the miner's again.
//!
//! The session tells the miner with `mining.set_version_mask` (BIP310: the server may send it
//! any time after version rolling was configured, valid immediately) right before the first
//! `mining.notify` whose job needs another mask than the one the miner has. A deployment's
//! state changes only at a retarget boundary, so the mask changes with a new tip: the jobs
//! sent under the old mask are stale by then, and each share is judged with its own job's
//! mask (a pure function of the job's version, nothing stored).

/// The bits a miner may roll on a job of `job_version` when `negotiated` was agreed in
/// mining.configure.
pub fn rollable_mask(negotiated: u32, job_version: u32) -> u32 {
    negotiated & !job_version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalled_bits_leave_the_mask_and_others_stay() {
        assert_eq!(rollable_mask(0x1fff_e000, 0x2000_0000), 0x1fff_e000);
        assert_eq!(rollable_mask(0x1fff_e000, 0x3000_0000), 0x0fff_e000);
        // A bit the miner did not ask for is not given back.
        assert_eq!(rollable_mask(0x0000_e000, 0x3000_0000), 0x0000_e000);
        // Bits below the mask (BIP9's 0 to 4) do not touch it.
        assert_eq!(rollable_mask(0x1fff_ffe0, 0x2000_0004), 0x1fff_ffe0);
    }
}
