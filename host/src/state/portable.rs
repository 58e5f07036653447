//! One SQL text for both directory backends. The recovery, audit and support tables
//! are new, so they are written once in the subset SQLite and PostgreSQL share
//! (`TEXT` and `BIGINT` columns, `$n` placeholders, `ON CONFLICT`), and run through
//! this small adapter instead of twice by hand. Values cross as [`Val`]; SQLite reads
//! `$n` as `?n`.

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};

use super::StoreError;

/// A parameter or a column value. Integers are `BIGINT` on PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    /// BLOB in SQLite, BYTEA in PostgreSQL (a sealed phone).
    Bytes(Option<Vec<u8>>),
    /// INTEGER 0/1 in SQLite, BOOLEAN in PostgreSQL. Read back as `Int`.
    Bool(Option<bool>),
}

impl Val {
    pub fn int(v: i64) -> Self {
        Self::Int(Some(v))
    }
    pub fn text(v: impl Into<String>) -> Self {
        Self::Text(Some(v.into()))
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(v) => *v,
            Self::Bool(v) => v.map(i64::from),
            Self::Text(_) | Self::Bytes(_) => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(v) => v.as_deref(),
            Self::Int(_) | Self::Bytes(_) | Self::Bool(_) => None,
        }
    }
    pub fn into_text(self) -> Option<String> {
        match self {
            Self::Text(v) => v,
            Self::Int(_) | Self::Bytes(_) | Self::Bool(_) => None,
        }
    }
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Self::Bytes(v) => v,
            Self::Int(_) | Self::Text(_) | Self::Bool(_) => None,
        }
    }
}

pub type Row = Vec<Val>;

/// Statements inside one transaction.
pub trait SqlTx {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StoreError>;
}

/// The few places where the two databases need different SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Row locks a `SELECT … FOR UPDATE [SKIP LOCKED]` takes on PostgreSQL; SQLite's
    /// immediate transaction already holds its one write lock, and has no such clause.
    pub fn row_lock(self, skip_locked: bool) -> &'static str {
        match (self, skip_locked) {
            (Self::Sqlite, _) => "",
            (Self::Postgres, false) => " FOR UPDATE",
            (Self::Postgres, true) => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The larger of two values: a scalar `MAX` in SQLite, `GREATEST` in PostgreSQL.
    pub fn greatest(self) -> &'static str {
        match self {
            Self::Sqlite => "MAX",
            Self::Postgres => "GREATEST",
        }
    }
}

/// A store that runs portable SQL: each call of `transact` is one transaction,
/// committed when `work` returns `Ok`, rolled back otherwise.
pub trait SqlStore: Send + Sync {
    fn dialect(&self) -> Dialect;

    /// A secret was scrubbed from a row: a store that keeps old row versions where a
    /// copy of its files would find them (SQLite's WAL) forgets them at
    /// `forget_scrubbed`.
    fn scrubbed(&self) {}

    fn transact(
        &self,
        work: &mut dyn FnMut(&mut dyn SqlTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs reads outside an explicit transaction (each statement sees its own
    /// snapshot): the login path's lookups take no write lock and no BEGIN/COMMIT.
    fn read(
        &self,
        work: &mut dyn FnMut(&mut dyn SqlTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.transact(work)
    }

    /// Serializes writers of one append-only table (the audit chain) within the
    /// transaction: a table lock on PostgreSQL; SQLite has one writer anyway.
    fn lock_table(&self, tx: &mut dyn SqlTx, table: &str) -> Result<(), StoreError>;

    /// Forgets the payloads scrubbed since the last call where the storage still
    /// keeps their old versions (SQLite's WAL); nothing to do elsewhere.
    fn forget_scrubbed(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The audit chain's keys (`[audit]`), when this store was opened with them.
    fn audit_keys(&self) -> Option<&super::audit::ChainKeys> {
        None
    }
}

/// Runs `work` in one transaction and hands back what it produced.
pub fn transact<T>(
    store: &dyn SqlStore,
    mut work: impl FnMut(&mut dyn SqlTx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    store.transact(&mut |tx| {
        out = Some(work(tx)?);
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Backend("transaction produced nothing".into()))
}

/// Runs `reads` outside an explicit transaction (see [`SqlStore::read`]).
pub fn read<T>(
    store: &dyn SqlStore,
    mut reads: impl FnMut(&mut dyn SqlTx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    store.read(&mut |tx| {
        out = Some(reads(tx)?);
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Backend("read produced nothing".into()))
}

/// The one number a `SELECT COUNT(*) …` answers, in its own transaction.
pub fn count(store: &dyn SqlStore, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
    let rows = transact(store, |tx| tx.query(sql, params))?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(Val::as_int)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0))
}

pub(super) fn sqlite_text(sql: &str) -> String {
    sql.replace('$', "?")
}

pub(super) struct SqliteTx<'a>(pub &'a rusqlite::Connection);

impl SqlTx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        let mut statement = self.0.prepare_cached(&sqlite_text(sql))?;
        let n = statement.execute(rusqlite::params_from_iter(params.iter().map(sqlite_param)))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StoreError> {
        let mut statement = self.0.prepare_cached(&sqlite_text(sql))?;
        let width = statement.column_count();
        let rows = statement.query_map(
            rusqlite::params_from_iter(params.iter().map(sqlite_param)),
            |row| {
                (0..width)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Val::Text(None),
                            rusqlite::types::ValueRef::Integer(v) => Val::Int(Some(v)),
                            rusqlite::types::ValueRef::Real(v) => Val::Int(Some(v as i64)),
                            rusqlite::types::ValueRef::Text(t) => {
                                Val::Text(Some(String::from_utf8_lossy(t).into_owned()))
                            }
                            rusqlite::types::ValueRef::Blob(b) => Val::Bytes(Some(b.to_vec())),
                        })
                    })
                    .collect::<rusqlite::Result<Row>>()
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn sqlite_param(v: &Val) -> rusqlite::types::Value {
    match v {
        Val::Int(Some(v)) => rusqlite::types::Value::Integer(*v),
        Val::Text(Some(v)) => rusqlite::types::Value::Text(v.clone()),
        Val::Bytes(Some(v)) => rusqlite::types::Value::Blob(v.clone()),
        Val::Bool(Some(v)) => rusqlite::types::Value::Integer(i64::from(*v)),
        Val::Int(None) | Val::Text(None) | Val::Bytes(None) | Val::Bool(None) => {
            rusqlite::types::Value::Null
        }
    }
}

/// Statements on a PostgreSQL transaction, or (for reads) on a pooled connection.
pub(super) struct PostgresTx<'a, C: postgres::GenericClient>(pub &'a mut C);

/// Each parameter with its type, which `Val` knows: a statement is then sent in one
/// round trip (`query_typed`) instead of being prepared, executed and closed.
fn pg_params(params: &[Val]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|v| match v {
            Val::Int(v) => (v as &(dyn ToSql + Sync), Type::INT8),
            Val::Text(v) => (v as &(dyn ToSql + Sync), Type::TEXT),
            Val::Bytes(v) => (v as &(dyn ToSql + Sync), Type::BYTEA),
            Val::Bool(v) => (v as &(dyn ToSql + Sync), Type::BOOL),
        })
        .collect()
}

/// A statement sent with its parameters' types (one round trip); its affected rows.
pub(super) fn execute_typed(
    tx: &mut impl postgres::GenericClient,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<u64, StoreError> {
    let mut rows = tx.query_typed_raw(sql, params.iter().cloned())?;
    while rows.next()?.is_some() {}
    Ok(rows.rows_affected().unwrap_or(0))
}

impl<C: postgres::GenericClient> SqlTx for PostgresTx<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        execute_typed(self.0, sql, &pg_params(params))
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, StoreError> {
        let rows = self.0.query_typed(sql, &pg_params(params))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let ty = row.columns()[i].type_();
                        Ok(if *ty == Type::INT8 {
                            Val::Int(row.try_get::<_, Option<i64>>(i)?)
                        } else if *ty == Type::INT4 {
                            Val::Int(row.try_get::<_, Option<i32>>(i)?.map(i64::from))
                        } else if *ty == Type::BOOL {
                            Val::Int(row.try_get::<_, Option<bool>>(i)?.map(i64::from))
                        } else if *ty == Type::BYTEA {
                            Val::Bytes(row.try_get::<_, Option<Vec<u8>>>(i)?)
                        } else {
                            Val::Text(row.try_get::<_, Option<String>>(i)?)
                        })
                    })
                    .collect::<Result<Row, postgres::Error>>()
                    .map_err(StoreError::from)
            })
            .collect()
    }
}
