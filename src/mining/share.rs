//! Why a share is refused, with the SubmitShares.Error code each reason is sent as.
//!
//! The spec gives no codes; these are the strings of the SRI pool (mining_sv2's
//! `ERROR_CODE_SUBMIT_SHARES_*`) so that proxies written against it understand us, plus two
//! nTime codes of ours where SRI has none.

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
    /// nTime too far ahead of the pool's clock.
    NtimeTooNew,
    /// The version differs from the job's while version rolling is not allowed.
    VersionRollingNotAllowed,
    /// Version bits outside the BIP320 mask changed.
    InvalidNonRollableVersionBit,
    /// The same share (job, nonce, nTime, version, extranonce) was already accepted.
    DuplicateShare,
    /// The share's hash is above the channel's target.
    DifficultyTooLow,
}

impl ShareRejection {
    /// Every reason, for statistics tables.
    pub const ALL: [ShareRejection; 10] = [
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
