//! Why a share is refused, with the SubmitShares.Error code each reason is sent as.
//!
//! The spec gives no codes; these are the strings of the SRI pool (mining_sv2's
//! `ERROR_CODE_SUBMIT_SHARES_*`) so that proxies written against it understand us, plus two
//! nTime codes, `invalid-tlv` and `too-many-shares` of ours where SRI has none.

/// One reason to refuse a share; each rule of validation has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShareRejection {
    /// No open channel with that id on this connection.
    InvalidChannelId,
    /// No valid job with that id on the channel.
    InvalidJobId,
    /// The job belongs to an older prev hash.
    StaleShare,
    /// The extranonce is not of the size negotiated for the channel.
    BadExtranonceSize,
    /// nTime below the job's min_ntime.
    NtimeTooOld,
    /// nTime past the latest prev hash's min_ntime plus the seconds since (and the pool's
    /// allowance).
    NtimeTooNew,
    /// The version differs from the job's while version rolling is not allowed.
    VersionRollingNotAllowed,
    /// Version bits outside the BIP323 mask changed.
    InvalidNonRollableVersionBit,
    /// The same share (job, nonce, nTime, version, extranonce) was already accepted.
    DuplicateShare,
    /// The share's hash is above its job's target.
    DifficultyTooLow,
    /// A TLV of a negotiated extension is malformed, too long or not UTF-8 (03 §3.4.3: the
    /// message is rejected).
    InvalidTlv,
    /// The channel submits valid shares faster than its rate limit (a multiple of the vardiff
    /// aim); its target is raised at once.
    TooManyShares,
    /// A valid share the pool cannot record now (its share ledger cannot write): not
    /// acknowledged, not credited; the miner may keep mining (issue 15).
    LedgerUnavailable,
}

impl ShareRejection {
    /// Every reason, for statistics tables.
    pub const ALL: [ShareRejection; 13] = [
        ShareRejection::InvalidChannelId,
        ShareRejection::InvalidJobId,
        ShareRejection::StaleShare,
        ShareRejection::BadExtranonceSize,
        ShareRejection::NtimeTooOld,
        ShareRejection::NtimeTooNew,
        ShareRejection::VersionRollingNotAllowed,
        ShareRejection::InvalidNonRollableVersionBit,
        ShareRejection::DuplicateShare,
        ShareRejection::DifficultyTooLow,
        ShareRejection::InvalidTlv,
        ShareRejection::TooManyShares,
        ShareRejection::LedgerUnavailable,
    ];

    /// The `error_code` sent in SubmitShares.Error.
    pub fn code(self) -> &'static str {
        match self {
            ShareRejection::InvalidChannelId => "invalid-channel-id",
            ShareRejection::InvalidJobId => "invalid-job-id",
            ShareRejection::StaleShare => "stale-share",
            ShareRejection::BadExtranonceSize => "bad-extranonce-size",
            ShareRejection::NtimeTooOld => "ntime-too-old",
            ShareRejection::NtimeTooNew => "ntime-too-new",
            ShareRejection::VersionRollingNotAllowed => "version-rolling-not-allowed",
            ShareRejection::InvalidNonRollableVersionBit => "invalid-non-rollable-version-bit",
            ShareRejection::DuplicateShare => "duplicate-share",
            ShareRejection::DifficultyTooLow => "difficulty-too-low",
            ShareRejection::InvalidTlv => "invalid-tlv",
            ShareRejection::TooManyShares => "too-many-shares",
            ShareRejection::LedgerUnavailable => "ledger-unavailable",
        }
    }

    /// Index into per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for ShareRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
