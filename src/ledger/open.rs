//! Where the ledger lives, from one string (`ledger_url`, or the default file in the data
//! directory), and opening it as a `Box<dyn Ledger>`: the one place that chooses a backend.
//! A PostgreSQL URL's password never reaches `Display` or `Debug`.

use std::fmt;
use std::path::PathBuf;

use super::{Ledger, LedgerError, MemoryLedger, PostgresLedger, SqliteLedger, SqliteSettings};

/// A ledger's location: an SQLite file, a PostgreSQL URL, or memory (tests).
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// `memory:`: a [`MemoryLedger`], nothing survives the process (tests, benchmarks).
    Memory,
    /// An SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl LedgerLocation {
    /// `postgres://...` or `postgresql://...` is PostgreSQL, `memory:` a ledger in memory;
    /// anything else non-empty is the path of an SQLite file (`sqlite://` in front is taken
    /// off).
    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(LedgerError::Location("empty ledger location".into()));
        }
        let lower = trimmed.get(..13).unwrap_or(trimmed).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(LedgerLocation::Postgres(trimmed.to_owned()))
        } else if trimmed == "memory:" {
            Ok(LedgerLocation::Memory)
        } else if let Some(path) = trimmed.strip_prefix("sqlite://") {
            Ok(LedgerLocation::Sqlite(PathBuf::from(path)))
        } else {
            Ok(LedgerLocation::Sqlite(PathBuf::from(trimmed)))
        }
    }

    /// The location with any password replaced by `***`: what logs and errors may show.
    pub fn redacted(&self) -> String {
        match self {
            LedgerLocation::Memory => "memory:".into(),
            LedgerLocation::Sqlite(path) => path.display().to_string(),
            LedgerLocation::Postgres(url) => redact_url(url),
        }
    }
}

/// `scheme://user:password@host/...` with the password (and a `password=` query parameter)
/// replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    // The driver takes the credentials up to the first `@`, wherever it is (a password may
    // hold an unescaped `/` or `?`, as generated ones often do): so does this.
    let (credentials, rest) = match rest.split_once('@') {
        Some((userinfo, rest)) => match userinfo.split_once(':') {
            Some((user, _password)) => (format!("{user}:***@"), rest),
            None => (format!("{userinfo}@"), rest),
        },
        None => (String::new(), rest),
    };
    let (host, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = format!("{credentials}{host}");
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerLocation::Memory => f.write_str("Memory"),
            LedgerLocation::Sqlite(_) => write!(f, "Sqlite({:?})", self.redacted()),
            LedgerLocation::Postgres(_) => write!(f, "Postgres({:?})", self.redacted()),
        }
    }
}

/// Opens the ledger at `location` (SQLite with its default settings: WAL, synchronous=FULL),
/// migrating its schema.
pub fn open(location: &LedgerLocation) -> Result<Box<dyn Ledger>, LedgerError> {
    open_with(location, &SqliteSettings::default())
}

/// [`open`], an SQLite file with these settings (`ledger_sqlite_sync`).
pub fn open_with(
    location: &LedgerLocation,
    sqlite: &SqliteSettings,
) -> Result<Box<dyn Ledger>, LedgerError> {
    Ok(match location {
        LedgerLocation::Memory => Box::new(MemoryLedger::new()),
        LedgerLocation::Sqlite(path) => Box::new(SqliteLedger::open_with(path, sqlite)?),
        LedgerLocation::Postgres(url) => Box::new(PostgresLedger::connect(url)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_paths() {
        assert_eq!(
            LedgerLocation::parse("postgres://u@h/db").unwrap(),
            LedgerLocation::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(
            LedgerLocation::parse(" PostgreSQL://h/db ").unwrap(),
            LedgerLocation::Postgres("PostgreSQL://h/db".into())
        );
        assert_eq!(
            LedgerLocation::parse("data/ledger.sqlite3").unwrap(),
            LedgerLocation::Sqlite("data/ledger.sqlite3".into())
        );
        assert!(matches!(
            LedgerLocation::parse("  "),
            Err(LedgerError::Location(_))
        ));
    }

    #[test]
    fn never_shows_a_password() {
        for (url, shown) in [
            (
                "postgres://pool:s3cret@db.example:5432/ledger",
                "postgres://pool:***@db.example:5432/ledger",
            ),
            (
                "postgresql://pool:s3cret@db/ledger?sslmode=disable&password=s3cret",
                "postgresql://pool:***@db/ledger?sslmode=disable&password=***",
            ),
            ("postgres://pool@db/ledger", "postgres://pool@db/ledger"),
            ("postgres://db", "postgres://db"),
            ("postgres://a:b:s3cret@db", "postgres://a:***@db"),
            // A password with an unescaped `/` or `?` (the driver reads it up to the `@`).
            (
                "postgres://pool:ab/s3cret@db/ledger",
                "postgres://pool:***@db/ledger",
            ),
            (
                "postgres://pool:s3c?ret@db:5432/ledger",
                "postgres://pool:***@db:5432/ledger",
            ),
        ] {
            let location = LedgerLocation::parse(url).unwrap();
            assert_eq!(location.to_string(), shown);
            assert!(!format!("{location:?}").contains("s3cret"));
            assert!(!location.to_string().contains("s3c"), "{location}");
        }
    }

    #[test]
    fn a_malformed_url_is_a_location_error_without_the_password() {
        let location = LedgerLocation::parse("postgres://pool:s3cret@db:notaport/ledger").unwrap();
        match open(&location) {
            Err(LedgerError::Location(text)) => assert!(!text.contains("s3cret"), "{text}"),
            Err(other) => panic!("expected a location error, got {other:?}"),
            Ok(_) => panic!("opened a malformed URL"),
        }
    }
}
