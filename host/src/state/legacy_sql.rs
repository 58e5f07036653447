//! The products' own user databases on real servers: PostgreSQL and MySQL/MariaDB,
//! beside SQLite files (`legacy_sqlite`). Each product's accounts are one table,
//! `legacy_<product>_accounts`, in the database its URL names (products may share a
//! server or each have their own). Pools connect lazily: a server that is down is a
//! store that is `unavailable` to the rule, not a host that fails to start.

use crate::model::{LegacyAccount, LegacyStores, ServiceError, normalize_email};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mysql::prelude::Queryable;
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use secrecy::SecretString;
use serde_json::Value;

use super::legacy_sqlite::{LegacyRow, SqliteLegacyStores};
use super::{StoreError, check_stored_password, sqlite_path};

/// Where one product's accounts live.
pub(super) enum ProductStore {
    Sqlite(PathBuf),
    Postgres(r2d2::Pool<PostgresConnectionManager<NoTls>>),
    Mysql(mysql::Pool),
}

/// The legacy stores of a migration, one per product, on whichever backend each URL
/// names (`sqlite://`, `postgres://`, `mysql://`).
pub struct LegacyProducts {
    pub(super) products: BTreeMap<String, ProductStore>,
}

pub(super) fn table(product: &str) -> Result<String, StoreError> {
    if product.is_empty()
        || product.len() > 40
        || !product
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(StoreError::Backend(format!(
            "legacy product name {product:?}: use lowercase letters, digits and _ (it names a table)"
        )));
    }
    Ok(format!("legacy_{product}_accounts"))
}

fn postgres_pool(url: &str) -> Result<r2d2::Pool<PostgresConnectionManager<NoTls>>, StoreError> {
    let config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Backend(format!("postgres URL: {e}")))?;
    Ok(r2d2::Pool::builder()
        .max_size(8)
        .min_idle(Some(0))
        .connection_timeout(std::time::Duration::from_secs(2))
        .build_unchecked(PostgresConnectionManager::new(config, NoTls)))
}

fn mysql_pool(url: &str) -> Result<mysql::Pool, StoreError> {
    let opts =
        mysql::Opts::from_url(url).map_err(|e| StoreError::Backend(format!("mysql URL: {e}")))?;
    let opts = mysql::OptsBuilder::from_opts(opts)
        .pool_opts(
            mysql::PoolOpts::default()
                .with_constraints(mysql::PoolConstraints::new(0, 8).expect("0 <= 8")),
        )
        .tcp_connect_timeout(Some(std::time::Duration::from_secs(2)));
    mysql::Pool::new(opts).map_err(|e| StoreError::Backend(format!("mysql: {e}")))
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl LegacyProducts {
    /// The stores `[state.legacy]` names, by product; SQLite paths relative to `base`.
    pub fn open(urls: &BTreeMap<String, String>, base: &Path) -> Result<Self, StoreError> {
        let mut products = BTreeMap::new();
        for (product, url) in urls {
            let store = if is_postgres(url) {
                table(product)?;
                ProductStore::Postgres(postgres_pool(url)?)
            } else if url.starts_with("mysql://") {
                table(product)?;
                ProductStore::Mysql(mysql_pool(url)?)
            } else {
                ProductStore::Sqlite(sqlite_path(url, base)?)
            };
            products.insert(product.clone(), store);
        }
        Ok(Self { products })
    }

    /// Replaces a product's accounts with `rows` (seeding), on its URL's backend.
    pub fn replace(
        product: &str,
        url: &str,
        base: &Path,
        rows: &[LegacyRow<'_>],
    ) -> Result<(), StoreError> {
        if is_postgres(url) {
            let table = table(product)?;
            let pool = postgres_pool(url)?;
            let mut conn = pool.get()?;
            let mut tx = conn.transaction()?;
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS {table};
                 CREATE TABLE {table} (legacy_id TEXT PRIMARY KEY, email TEXT NOT NULL,
                     email_norm TEXT NOT NULL, email_verified BOOLEAN NOT NULL, password_hash TEXT,
                     created_at_ms BIGINT NOT NULL, profile TEXT NOT NULL, unified_id TEXT);
                 CREATE INDEX {table}_email ON {table}(email_norm);"
            ))?;
            let insert = tx.prepare(&format!(
                "INSERT INTO {table} (legacy_id, email, email_norm, email_verified, password_hash,
                     created_at_ms, profile) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))?;
            for row in rows {
                tx.execute(
                    &insert,
                    &[
                        &row.legacy_id,
                        &row.email,
                        &normalize_email(row.email),
                        &row.email_verified,
                        &row.password_hash,
                        &(row.created_at_ms as i64),
                        &row.profile.to_string(),
                    ],
                )?;
            }
            tx.commit()?;
            return Ok(());
        }
        if url.starts_with("mysql://") {
            let table = table(product)?;
            let mysql = |e: mysql::Error| StoreError::Backend(format!("mysql: {e}"));
            let mut conn = mysql_pool(url)?.get_conn().map_err(mysql)?;
            conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))
                .map_err(mysql)?;
            conn.query_drop(format!(
                "CREATE TABLE {table} (legacy_id VARCHAR(191) PRIMARY KEY, email VARCHAR(320) NOT NULL,
                     email_norm VARCHAR(320) NOT NULL, email_verified BOOLEAN NOT NULL, password_hash TEXT,
                     created_at_ms BIGINT NOT NULL, profile TEXT NOT NULL, unified_id VARCHAR(191),
                     INDEX (email_norm))
                 CHARACTER SET utf8mb4"
            ))
            .map_err(mysql)?;
            let mut tx = conn
                .start_transaction(mysql::TxOpts::default())
                .map_err(mysql)?;
            tx.exec_batch(
                format!(
                    "INSERT INTO {table} (legacy_id, email, email_norm, email_verified,
                         password_hash, created_at_ms, profile) VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                rows.iter().map(|row| {
                    (
                        row.legacy_id,
                        row.email,
                        normalize_email(row.email),
                        row.email_verified,
                        row.password_hash,
                        row.created_at_ms as i64,
                        row.profile.to_string(),
                    )
                }),
            )
            .map_err(mysql)?;
            tx.commit().map_err(mysql)?;
            return Ok(());
        }
        SqliteLegacyStores::create(&sqlite_path(url, base)?, rows)
    }

    /// What in a product's store `seed` did not make, which `replace` would destroy:
    /// accounts whose email is outside `domains` (the ones seed writes), or, in an
    /// SQLite file, tables other than a product store's. `None`: nothing of the kind,
    /// or no store yet.
    pub fn foreign_rows(
        product: &str,
        url: &str,
        base: &Path,
        domains: &[&str],
    ) -> Result<Option<String>, StoreError> {
        // Constants of the caller's: no text from outside reaches the SQL.
        let outside = format!(
            "NOT ({})",
            domains
                .iter()
                .map(|d| format!("email_norm LIKE '%@{d}'"))
                .collect::<Vec<_>>()
                .join(" OR ")
        );
        let found = |n: i64, table: &str| {
            (n > 0).then(|| format!("{n} account(s) in {table} with addresses seed does not make"))
        };
        if is_postgres(url) {
            let table = table(product)?;
            let mut conn = postgres_pool(url)?.get()?;
            let exists: Option<String> = conn
                .query_one("SELECT to_regclass($1)::text", &[&table])?
                .get(0);
            if exists.is_none() {
                return Ok(None);
            }
            let n: i64 = conn
                .query_one(
                    &format!("SELECT COUNT(*) FROM {table} WHERE {outside}"),
                    &[],
                )?
                .get(0);
            return Ok(found(n, &format!("{product}'s {table}")));
        }
        if url.starts_with("mysql://") {
            let table = table(product)?;
            let mysql = |e: mysql::Error| StoreError::Backend(format!("mysql: {e}"));
            let mut conn = mysql_pool(url)?.get_conn().map_err(mysql)?;
            let exists: Option<i64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.tables
                     WHERE table_schema = DATABASE() AND table_name = ?",
                    (&table,),
                )
                .map_err(mysql)?;
            if exists.unwrap_or(0) == 0 {
                return Ok(None);
            }
            let n: Option<i64> = conn
                .query_first(format!("SELECT COUNT(*) FROM {table} WHERE {outside}"))
                .map_err(mysql)?;
            return Ok(found(n.unwrap_or(0), &format!("{product}'s {table}")));
        }
        let path = sqlite_path(url, base)?;
        if !path.exists() {
            return Ok(None);
        }
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let tables = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )?
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let others: Vec<&str> = tables
            .iter()
            .map(String::as_str)
            .filter(|t| *t != "accounts")
            .collect();
        if !others.is_empty() {
            return Ok(Some(format!(
                "{} holds tables seed does not make ({})",
                path.display(),
                others.join(", ")
            )));
        }
        if tables.is_empty() {
            return Ok(None);
        }
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM accounts WHERE {outside}"),
            [],
            |row| row.get(0),
        )?;
        Ok(found(n, &path.display().to_string()))
    }

    fn store(&self, product: &str) -> Result<&ProductStore, ServiceError> {
        self.products
            .get(product)
            .ok_or_else(|| ServiceError::invalid_argument(format!("unknown product {product:?}")))
    }
}

type Found = (String, String, bool, i64, String);

fn account(
    product: &str,
    (legacy_id, email, email_verified, created, profile): Found,
) -> LegacyAccount {
    LegacyAccount {
        product: product.to_owned(),
        legacy_id,
        email,
        email_verified,
        created_at_ms: created.max(0) as u64,
        profile: serde_json::from_str(&profile).unwrap_or(Value::Null),
    }
}

impl LegacyStores for LegacyProducts {
    fn find_accounts(&self, email: &str) -> Result<Vec<LegacyAccount>, ServiceError> {
        let email_norm = normalize_email(email);
        let mut found = Vec::new();
        for (product, store) in &self.products {
            let down = |e: String| ServiceError::unavailable(format!("{product} store: {e}"));
            let rows: Vec<Found> = match store {
                ProductStore::Sqlite(path) => {
                    let single =
                        SqliteLegacyStores::new(BTreeMap::from([(product.clone(), path.clone())]));
                    found.extend(single.find_accounts(email)?);
                    continue;
                }
                ProductStore::Postgres(pool) => {
                    let mut conn = pool.get().map_err(|e| down(e.to_string()))?;
                    conn.query(
                        &format!(
                            "SELECT legacy_id, email, email_verified, created_at_ms, profile FROM {}
                             WHERE email_norm = $1 ORDER BY legacy_id",
                            table(product).map_err(|e| down(e.to_string()))?
                        ),
                        &[&email_norm],
                    )
                    .map_err(|e| down(e.to_string()))?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                    .collect()
                }
                ProductStore::Mysql(pool) => {
                    let mut conn = pool.get_conn().map_err(|e| down(e.to_string()))?;
                    conn.exec(
                        format!(
                            "SELECT legacy_id, email, email_verified, created_at_ms, profile FROM {}
                             WHERE email_norm = ? ORDER BY legacy_id",
                            table(product).map_err(|e| down(e.to_string()))?
                        ),
                        (&email_norm,),
                    )
                    .map_err(|e| down(e.to_string()))?
                }
            };
            found.extend(rows.into_iter().map(|row| account(product, row)));
        }
        Ok(found)
    }

    fn verify_password(
        &self,
        product: &str,
        legacy_id: &str,
        password: &SecretString,
    ) -> Result<bool, ServiceError> {
        let down = |e: String| ServiceError::unavailable(format!("{product} store: {e}"));
        let stored: Option<Option<String>> = match self.store(product)? {
            ProductStore::Sqlite(path) => {
                let single =
                    SqliteLegacyStores::new(BTreeMap::from([(product.to_owned(), path.clone())]));
                return single.verify_password(product, legacy_id, password);
            }
            ProductStore::Postgres(pool) => {
                let mut conn = pool.get().map_err(|e| down(e.to_string()))?;
                conn.query_opt(
                    &format!(
                        "SELECT password_hash FROM {} WHERE legacy_id = $1",
                        table(product).map_err(|e| down(e.to_string()))?
                    ),
                    &[&legacy_id],
                )
                .map_err(|e| down(e.to_string()))?
                .map(|row| row.get(0))
            }
            ProductStore::Mysql(pool) => {
                let mut conn = pool.get_conn().map_err(|e| down(e.to_string()))?;
                conn.exec_first(
                    format!(
                        "SELECT password_hash FROM {} WHERE legacy_id = ?",
                        table(product).map_err(|e| down(e.to_string()))?
                    ),
                    (legacy_id,),
                )
                .map_err(|e| down(e.to_string()))?
            }
        };
        check_stored_password(stored, password, &format!("{product} account {legacy_id}"))
    }
}
