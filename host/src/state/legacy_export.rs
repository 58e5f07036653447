//! Reading the products' legacy accounts in bulk, for the import export: each product
//! a page at a time in its own primary-key order (keyset pagination: memory stays
//! flat, and no ordering has to agree across SQLite, PostgreSQL and MySQL), and the
//! accounts of a page's emails in every product at once (one `IN` query per product,
//! on the email index lookups already use).

use std::collections::BTreeMap;

use mysql::prelude::Queryable;
use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::legacy_sql::{LegacyProducts, ProductStore, table};

/// One legacy account as the export reads it. Its password hash is a secret: `Debug`
/// leaves it out.
#[derive(Clone)]
pub struct ExportRow {
    pub product: String,
    pub legacy_id: String,
    pub email: String,
    pub email_norm: String,
    pub email_verified: bool,
    pub password_hash: Option<String>,
    pub created_at_ms: i64,
    /// JSON text as the product stores it (checked by the export, not here).
    pub profile: String,
    /// Written by `import backfill-ids`; `None` where the column does not exist yet.
    pub unified_id: Option<String>,
}

impl std::fmt::Debug for ExportRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportRow")
            .field("product", &self.product)
            .field("legacy_id", &self.legacy_id)
            .field("has_password_hash", &self.password_hash.is_some())
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str =
    "legacy_id, email, email_norm, email_verified, password_hash, created_at_ms, profile";

type Raw = (
    String,
    String,
    String,
    bool,
    Option<String>,
    i64,
    String,
    Option<String>,
);

fn row(product: &str, r: Raw) -> ExportRow {
    ExportRow {
        product: product.to_owned(),
        legacy_id: r.0,
        email: r.1,
        email_norm: r.2,
        email_verified: r.3,
        password_hash: r.4,
        created_at_ms: r.5,
        profile: r.6,
        unified_id: r.7,
    }
}

pub(super) fn backend(product: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{product} store: {e}"))
}

pub(super) fn sqlite(path: &std::path::Path, write: bool) -> Result<Connection, StoreError> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    Ok(Connection::open_with_flags(path, flags)?)
}

fn sqlite_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn pg_raw(r: &postgres::Row) -> Raw {
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
    )
}

impl LegacyProducts {
    pub fn product_names(&self) -> impl Iterator<Item = &str> {
        self.products.keys().map(String::as_str)
    }

    /// Whether `product`'s table has the `unified_id` column `backfill-ids` writes.
    pub fn has_unified_id(&self, product: &str) -> Result<bool, StoreError> {
        let down = backend(product);
        match self.store_of(product)? {
            ProductStore::Sqlite(path) => {
                let conn = sqlite(path, false)?;
                let mut statement =
                    conn.prepare("SELECT name FROM pragma_table_info('accounts')")?;
                let names = statement
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(names.iter().any(|n| n == "unified_id"))
            }
            ProductStore::Postgres(pool) => {
                let mut conn = pool.get()?;
                // The table as the queries name it: the first on the search path.
                let found = conn
                    .query(
                        "SELECT 1 FROM information_schema.columns WHERE table_name = $1
                         AND column_name = 'unified_id' AND table_schema = current_schema()",
                        &[&table(product)?],
                    )
                    .map_err(|e| down(e.to_string()))?;
                Ok(!found.is_empty())
            }
            ProductStore::Mysql(pool) => {
                let mut conn = pool.get_conn().map_err(|e| down(e.to_string()))?;
                let found: Option<i64> = conn
                    .exec_first(
                        "SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE()
                         AND table_name = ? AND column_name = 'unified_id'",
                        (table(product)?,),
                    )
                    .map_err(|e| down(e.to_string()))?;
                Ok(found.is_some())
            }
        }
    }

    /// How many of `product`'s accounts were created at or after `since_ms`.
    pub fn count_accounts(&self, product: &str, since_ms: i64) -> Result<u64, StoreError> {
        let down = backend(product);
        let n: i64 = match self.store_of(product)? {
            ProductStore::Sqlite(path) => sqlite(path, false)?.query_row(
                "SELECT COUNT(*) FROM accounts WHERE created_at_ms >= ?1",
                [since_ms],
                |r| r.get(0),
            )?,
            ProductStore::Postgres(pool) => pool
                .get()?
                .query_one(
                    &format!(
                        "SELECT COUNT(*) FROM {} WHERE created_at_ms >= $1",
                        table(product)?
                    ),
                    &[&since_ms],
                )
                .map_err(|e| down(e.to_string()))?
                .get(0),
            ProductStore::Mysql(pool) => pool
                .get_conn()
                .map_err(|e| down(e.to_string()))?
                .exec_first(
                    format!(
                        "SELECT COUNT(*) FROM {} WHERE created_at_ms >= ?",
                        table(product)?
                    ),
                    (since_ms,),
                )
                .map_err(|e| down(e.to_string()))?
                .unwrap_or(0),
        };
        Ok(n.max(0) as u64)
    }

    pub(super) fn store_of(&self, product: &str) -> Result<&ProductStore, StoreError> {
        self.products
            .get(product)
            .ok_or_else(|| StoreError::Backend(format!("unknown legacy product {product:?}")))
    }

    /// Up to `limit` of `product`'s accounts created at or after `since_ms`, in its
    /// primary-key order after `after` (the last `legacy_id` of the previous page).
    /// `unified` says whether the table has the column (`has_unified_id`).
    pub fn export_page(
        &self,
        product: &str,
        after: Option<&str>,
        since_ms: i64,
        limit: usize,
        unified: bool,
    ) -> Result<Vec<ExportRow>, StoreError> {
        let down = backend(product);
        let unified_col = if unified { "unified_id" } else { "NULL" };
        let after = after.unwrap_or("");
        let raws: Vec<Raw> = match self.store_of(product)? {
            ProductStore::Sqlite(path) => {
                let conn = sqlite(path, false)?;
                let mut statement = conn.prepare(&format!(
                    "SELECT {COLUMNS}, {unified_col} FROM accounts
                     WHERE legacy_id > ?1 AND created_at_ms >= ?2 ORDER BY legacy_id LIMIT ?3"
                ))?;
                statement
                    .query_map(rusqlite::params![after, since_ms, limit as i64], sqlite_raw)?
                    .collect::<rusqlite::Result<_>>()?
            }
            ProductStore::Postgres(pool) => {
                let mut conn = pool.get()?;
                let unified_col = if unified { "unified_id" } else { "NULL::TEXT" };
                conn.query(
                    &format!(
                        "SELECT {COLUMNS}, {unified_col} FROM {} WHERE legacy_id > $1
                         AND created_at_ms >= $2 ORDER BY legacy_id LIMIT $3",
                        table(product)?
                    ),
                    &[&after, &since_ms, &(limit as i64)],
                )
                .map_err(|e| down(e.to_string()))?
                .iter()
                .map(pg_raw)
                .collect()
            }
            ProductStore::Mysql(pool) => {
                let mut conn = pool.get_conn().map_err(|e| down(e.to_string()))?;
                conn.exec_map(
                    format!(
                        "SELECT {COLUMNS}, {unified_col} FROM {} WHERE legacy_id > ?
                         AND created_at_ms >= ? ORDER BY legacy_id LIMIT ?",
                        table(product)?
                    ),
                    (after, since_ms, limit as u64),
                    |(a, b, c, d, e, f, g, h): Raw| (a, b, c, d, e, f, g, h),
                )
                .map_err(|e| down(e.to_string()))?
            }
        };
        Ok(raws.into_iter().map(|r| row(product, r)).collect())
    }

    /// Every account in `product` whose normalized email is one of `emails`.
    pub fn accounts_of(
        &self,
        product: &str,
        emails: &[&str],
        unified: bool,
    ) -> Result<Vec<ExportRow>, StoreError> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let down = backend(product);
        let unified_col = if unified { "unified_id" } else { "NULL" };
        let marks = vec!["?"; emails.len()].join(", ");
        let raws: Vec<Raw> = match self.store_of(product)? {
            ProductStore::Sqlite(path) => {
                let conn = sqlite(path, false)?;
                let mut statement = conn.prepare(&format!(
                    "SELECT {COLUMNS}, {unified_col} FROM accounts WHERE email_norm IN ({marks})"
                ))?;
                statement
                    .query_map(rusqlite::params_from_iter(emails), sqlite_raw)?
                    .collect::<rusqlite::Result<_>>()?
            }
            ProductStore::Postgres(pool) => {
                let mut conn = pool.get()?;
                let unified_col = if unified { "unified_id" } else { "NULL::TEXT" };
                let emails: Vec<&str> = emails.to_vec();
                conn.query(
                    &format!(
                        "SELECT {COLUMNS}, {unified_col} FROM {} WHERE email_norm = ANY($1)",
                        table(product)?
                    ),
                    &[&emails],
                )
                .map_err(|e| down(e.to_string()))?
                .iter()
                .map(pg_raw)
                .collect()
            }
            ProductStore::Mysql(pool) => {
                let mut conn = pool.get_conn().map_err(|e| down(e.to_string()))?;
                conn.exec_map(
                    format!(
                        "SELECT {COLUMNS}, {unified_col} FROM {} WHERE email_norm IN ({marks})",
                        table(product)?
                    ),
                    mysql::Params::Positional(emails.iter().map(|e| (*e).into()).collect()),
                    |(a, b, c, d, e, f, g, h): Raw| (a, b, c, d, e, f, g, h),
                )
                .map_err(|e| down(e.to_string()))?
            }
        };
        Ok(raws.into_iter().map(|r| row(product, r)).collect())
    }
}

/// Per product, whether its table has `unified_id`.
pub fn unified_columns(legacy: &LegacyProducts) -> Result<BTreeMap<String, bool>, StoreError> {
    legacy
        .product_names()
        .map(|p| Ok((p.to_owned(), legacy.has_unified_id(p)?)))
        .collect()
}
