//! Writing the unified id (the directory user's id) into the products' own account
//! rows, for `portcullis import backfill-ids`. A row gets an id only when it has none,
//! or when what it has is the id pre-generated from its email (`--pregenerate`, before
//! the migration) and the directory chose another: that is repaired. Any other id is a
//! conflict, reported and left alone: a product row is never pointed at another person
//! by this job.

use mysql::prelude::Queryable;
use rusqlite::OptionalExtension;
use serde::Serialize;

use super::StoreError;
use super::legacy_export::{backend, sqlite};
use super::legacy_sql::{LegacyProducts, ProductStore, table};

/// What one batch of writes did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IdWrites {
    pub written: u64,
    /// Rows that held the pre-generated id and now hold the directory's.
    pub repaired: u64,
    pub unchanged: u64,
    /// Links to accounts the product no longer has.
    pub missing: u64,
    /// (legacy id, the id the row holds) where it holds someone else's.
    pub conflicts: Vec<(String, String)>,
}

impl IdWrites {
    pub fn add(&mut self, other: IdWrites) {
        self.written += other.written;
        self.repaired += other.repaired;
        self.unchanged += other.unchanged;
        self.missing += other.missing;
        self.conflicts.extend(other.conflicts);
    }
}

/// What to do with a row holding `current`, to give it `target`.
enum Step {
    Write { repair: bool },
    Unchanged,
    Conflict(String),
}

fn step(
    current: Option<String>,
    email_norm: &str,
    target: &str,
    pregenerated: fn(&str) -> String,
) -> Step {
    match current {
        None => Step::Write { repair: false },
        Some(current) if current == target => Step::Unchanged,
        Some(current) if current == pregenerated(email_norm) => Step::Write { repair: true },
        Some(current) => Step::Conflict(current),
    }
}

impl LegacyProducts {
    /// Adds the `unified_id` column to `product`'s table if it lacks it.
    pub fn add_unified_id_column(&self, product: &str) -> Result<bool, StoreError> {
        if self.has_unified_id(product)? {
            return Ok(false);
        }
        let down = backend(product);
        match self.store_of(product)? {
            ProductStore::Sqlite(path) => {
                sqlite(path, true)?
                    .execute_batch("ALTER TABLE accounts ADD COLUMN unified_id TEXT")?;
            }
            ProductStore::Postgres(pool) => {
                pool.get()?
                    .batch_execute(&format!(
                        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS unified_id TEXT",
                        table(product)?
                    ))
                    .map_err(|e| down(e.to_string()))?;
            }
            ProductStore::Mysql(pool) => {
                pool.get_conn()
                    .map_err(|e| down(e.to_string()))?
                    .query_drop(format!(
                        "ALTER TABLE {} ADD COLUMN unified_id VARCHAR(191)",
                        table(product)?
                    ))
                    .map_err(|e| down(e.to_string()))?;
            }
        }
        Ok(true)
    }

    /// Gives each (legacy id, unified id) row its id, in one transaction.
    /// `pregenerated` is the id `--pregenerate` derives from an email; with
    /// `only_empty` (pre-generating), a row that holds any id keeps it.
    pub fn write_unified_ids(
        &self,
        product: &str,
        rows: &[(String, String)],
        pregenerated: fn(&str) -> String,
        only_empty: bool,
    ) -> Result<IdWrites, StoreError> {
        let down = backend(product);
        let mut tally = Tally {
            done: IdWrites::default(),
            pregenerated,
            only_empty,
        };
        match self.store_of(product)? {
            ProductStore::Sqlite(path) => {
                let mut conn = sqlite(path, true)?;
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                {
                    let mut read = tx.prepare(
                        "SELECT unified_id, email_norm FROM accounts WHERE legacy_id = ?1",
                    )?;
                    let mut write =
                        tx.prepare("UPDATE accounts SET unified_id = ?2 WHERE legacy_id = ?1")?;
                    for (legacy_id, target) in rows {
                        let current = read
                            .query_row([legacy_id], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()?;
                        if tally.take(legacy_id, current, target) {
                            write.execute([legacy_id, target])?;
                        }
                    }
                }
                tx.commit()?;
            }
            ProductStore::Postgres(pool) => {
                let table = table(product)?;
                let mut conn = pool.get()?;
                let mut tx = conn.transaction().map_err(|e| down(e.to_string()))?;
                let read = tx
                    .prepare(&format!(
                        "SELECT unified_id, email_norm FROM {table} WHERE legacy_id = $1 FOR UPDATE"
                    ))
                    .map_err(|e| down(e.to_string()))?;
                let write = tx
                    .prepare(&format!(
                        "UPDATE {table} SET unified_id = $2 WHERE legacy_id = $1"
                    ))
                    .map_err(|e| down(e.to_string()))?;
                for (legacy_id, target) in rows {
                    let current = tx
                        .query_opt(&read, &[legacy_id])
                        .map_err(|e| down(e.to_string()))?
                        .map(|r| (r.get(0), r.get(1)));
                    if tally.take(legacy_id, current, target) {
                        tx.execute(&write, &[legacy_id, target])
                            .map_err(|e| down(e.to_string()))?;
                    }
                }
                tx.commit().map_err(|e| down(e.to_string()))?;
            }
            ProductStore::Mysql(pool) => {
                let table = table(product)?;
                let mut conn = pool.get_conn().map_err(|e| down(e.to_string()))?;
                let mut tx = conn
                    .start_transaction(mysql::TxOpts::default())
                    .map_err(|e| down(e.to_string()))?;
                for (legacy_id, target) in rows {
                    let current: Option<(Option<String>, String)> = tx
                        .exec_first(
                            format!(
                                "SELECT unified_id, email_norm FROM {table} WHERE legacy_id = ? FOR UPDATE"
                            ),
                            (legacy_id,),
                        )
                        .map_err(|e| down(e.to_string()))?;
                    if tally.take(legacy_id, current, target) {
                        tx.exec_drop(
                            format!("UPDATE {table} SET unified_id = ? WHERE legacy_id = ?"),
                            (target, legacy_id),
                        )
                        .map_err(|e| down(e.to_string()))?;
                    }
                }
                tx.commit().map_err(|e| down(e.to_string()))?;
            }
        }
        Ok(tally.done)
    }
}

/// Counts each row's case as the writes go.
struct Tally {
    done: IdWrites,
    pregenerated: fn(&str) -> String,
    only_empty: bool,
}

impl Tally {
    /// True when the row (its current id and email, if it exists) is to be written.
    fn take(
        &mut self,
        legacy_id: &str,
        current: Option<(Option<String>, String)>,
        target: &str,
    ) -> bool {
        let Some((current, email_norm)) = current else {
            self.done.missing += 1;
            return false;
        };
        let current_step = if self.only_empty && current.is_some() {
            Step::Unchanged
        } else {
            step(current, &email_norm, target, self.pregenerated)
        };
        match current_step {
            Step::Write { repair } => {
                if repair {
                    self.done.repaired += 1;
                } else {
                    self.done.written += 1;
                }
                true
            }
            Step::Unchanged => {
                self.done.unchanged += 1;
                false
            }
            Step::Conflict(held) => {
                self.done.conflicts.push((legacy_id.to_owned(), held));
                false
            }
        }
    }
}
