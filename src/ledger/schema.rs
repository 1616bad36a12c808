//! Which schema versions a ledger's database may have for this program to run on it: the
//! versions this program knows, and newer ones whose migrations say that it still can.
//!
//! Several pool instances share one PostgreSQL ledger (issue 18). An upgrade migrates the
//! database when the first upgraded instance connects; the instances still on the older
//! program then meet a schema newer than theirs. Until schema 7 (PostgreSQL; 6 for SQLite)
//! they refused it, so every instance had to be upgraded in one go. Most migrations only add
//! (a table, a column with a default, a function) and leave what older programs read and
//! write as it was: such a migration records, in `schema_version.oldest_program_schema`, the
//! oldest schema a program may know and still run on a database it was applied to. A program
//! that meets a newer schema runs on it when every newer version allows it (and applies
//! nothing); a migration that changes what older programs use records its own version, and
//! they refuse it as before. A row without the column's value (versions written before it
//! existed) allows only programs that know that version.

use tracing::warn;

use super::LedgerError;

/// One version of a ledger's schema: its migration, and which older programs may still run on
/// a database it was applied to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// The SQL that makes the previous version this one.
    pub sql: &'static str,
    /// The oldest schema version a program may know and still run on the database once this
    /// version is applied: this version itself when older programs would go wrong on it.
    pub oldest_program_schema: u32,
}

/// What a program that knows versions 1 to `known` may do with a database whose
/// `schema_version` rows newer than `known` are `newer` (each its version and its
/// `oldest_program_schema`, `None` where the row has none).
///
/// `Ok(())`, and a warning in the log, when every newer version allows a program that knows
/// `known`; otherwise the [`LedgerError::Schema`] that says which version does not.
pub(crate) fn may_run_on_newer(
    known: u32,
    newer: &[(i64, Option<i64>)],
) -> Result<(), LedgerError> {
    let current = newer.iter().map(|(v, _)| *v).max().unwrap_or(0);
    let refusing = newer
        .iter()
        .filter(|(version, oldest)| oldest.unwrap_or(*version) > i64::from(known))
        .map(|(version, _)| *version)
        .min();
    match refusing {
        None => {
            warn!(
                "the ledger's schema is version {current}, newer than this program's {known}; \
                 its newer versions let this program run on it unchanged"
            );
            Ok(())
        }
        Some(version) => Err(LedgerError::Schema(format!(
            "the ledger's schema is version {current}, newer than this program's {known} \
             (version {version} needs a program that knows it: upgrade this one)"
        ))),
    }
}

/// Checks that a migration list is in the shape [`may_run_on_newer`] relies on: each version
/// allows programs no newer than itself.
#[cfg(test)]
pub(crate) fn check_list(migrations: &[Migration]) {
    for (index, m) in migrations.iter().enumerate() {
        let version = index as u32 + 1;
        assert!(
            (1..=version).contains(&m.oldest_program_schema),
            "version {version} says programs from {} may run on it",
            m.oldest_program_schema
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_that_allow_this_program_let_it_run() {
        assert!(may_run_on_newer(7, &[(8, Some(7))]).is_ok());
        assert!(may_run_on_newer(7, &[(8, Some(6)), (9, Some(5))]).is_ok());
    }

    #[test]
    fn one_newer_version_that_does_not_is_enough_to_refuse() {
        for newer in [
            vec![(8, Some(8))],
            vec![(8, Some(7)), (9, Some(9))],
            // A row written before the column: only programs that know it.
            vec![(8, None)],
        ] {
            match may_run_on_newer(7, &newer) {
                Err(LedgerError::Schema(text)) => {
                    assert!(text.contains("newer than this program's 7"), "{text}")
                }
                other => panic!("{newer:?}: expected a schema error, got {other:?}"),
            }
        }
        let Err(LedgerError::Schema(text)) =
            may_run_on_newer(7, &[(8, Some(7)), (9, Some(9)), (10, Some(10))])
        else {
            panic!("expected a schema error");
        };
        assert!(text.contains("version 10, newer"), "{text}");
        assert!(text.contains("version 9 needs"), "{text}");
    }
}
