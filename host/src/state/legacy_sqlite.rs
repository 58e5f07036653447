//! Each product's own legacy user database, one SQLite file per product. Opened per
//! call and never created by a lookup: a missing or broken database is a store that
//! is down, which the rule sees as `unavailable`.

use crate::model::{LegacyAccount, LegacyStores, ServiceError, normalize_email};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use secrecy::SecretString;
use serde_json::Value;

use super::{StoreError, check_stored_password};

/// `unified_id`: the directory user's id, once `portcullis import backfill-ids` wrote
/// it (a product that predates it gets it with `--add-column`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    legacy_id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_norm TEXT NOT NULL,
    email_verified INTEGER NOT NULL,
    password_hash TEXT,
    created_at_ms INTEGER NOT NULL,
    profile TEXT NOT NULL,
    unified_id TEXT
);
CREATE INDEX IF NOT EXISTS accounts_email ON accounts(email_norm);
";

pub struct SqliteLegacyStores {
    products: BTreeMap<String, PathBuf>,
}

/// One row of a legacy product database, as seeding writes it.
pub struct LegacyRow<'a> {
    pub legacy_id: &'a str,
    pub email: &'a str,
    pub email_verified: bool,
    pub password_hash: Option<&'a str>,
    pub created_at_ms: u64,
    pub profile: &'a Value,
}

impl SqliteLegacyStores {
    pub fn new(products: BTreeMap<String, PathBuf>) -> Self {
        Self { products }
    }

    pub fn products(&self) -> impl Iterator<Item = &str> {
        self.products.keys().map(String::as_str)
    }

    fn open(&self, product: &str) -> Result<Connection, ServiceError> {
        let path = self.products.get(product).ok_or_else(|| {
            ServiceError::invalid_argument(format!("unknown product {product:?}"))
        })?;
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| ServiceError::unavailable(format!("{product} store: {e}")))
    }

    /// Replaces a product's database with `rows` (seeding).
    pub fn create(path: &Path, rows: &[LegacyRow<'_>]) -> Result<(), StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        let _ = std::fs::remove_file(path);
        let mut conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        let tx = conn.transaction()?;
        for row in rows {
            tx.execute(
                "INSERT INTO accounts (legacy_id, email, email_norm, email_verified, password_hash,
                     created_at_ms, profile) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.legacy_id,
                    row.email,
                    normalize_email(row.email),
                    row.email_verified,
                    row.password_hash,
                    row.created_at_ms as i64,
                    row.profile.to_string()
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl LegacyStores for SqliteLegacyStores {
    fn find_accounts(&self, email: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        let email_norm = normalize_email(email);
        let mut found = Vec::new();
        for product in self.products.keys() {
            let conn = self.open(product)?;
            let query = |conn: &Connection| -> rusqlite::Result<Vec<LegacyAccount>> {
                let mut statement = conn.prepare(
                    "SELECT legacy_id, email, email_verified, created_at_ms, profile FROM accounts
                     WHERE email_norm = ?1 ORDER BY legacy_id",
                )?;
                let rows = statement.query_map([&email_norm], |row| {
                    Ok(LegacyAccount {
                        product: product.clone(),
                        legacy_id: row.get(0)?,
                        email: row.get(1)?,
                        email_verified: row.get(2)?,
                        created_at_ms: row.get::<_, i64>(3)? as u64,
                        profile: serde_json::from_str(&row.get::<_, String>(4)?)
                            .unwrap_or(Value::Null),
                    })
                })?;
                rows.collect()
            };
            found.extend(
                query(&conn)
                    .map_err(|e| ServiceError::unavailable(format!("{product} store: {e}")))?,
            );
        }
        Ok(found)
    }

    fn verify_password(
        &self,
        product: &str,
        legacy_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError> {
        let conn = self.open(product)?;
        let stored: Option<Option<String>> = conn
            .query_row(
                "SELECT password_hash FROM accounts WHERE legacy_id = ?1",
                [legacy_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| ServiceError::unavailable(format!("{product} store: {e}")))?;
        check_stored_password(stored, password, &format!("{product} account {legacy_id}"))
    }
}
