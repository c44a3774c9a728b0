//! What the shared SQL needs from a sqlx database, said once for SQLite and PostgreSQL.
//!
//! sqlx code generic over its `Database` trait needs higher-ranked bounds on every function
//! (`for<'c> &'c mut Connection: Executor<'c>`, `T: Encode + Type` per bound type, …), which Rust
//! does not carry from a trait to its users. Instead, [`Driver`] is implemented for the two
//! concrete databases and offers exactly the operations the stores use; [`Bindable`] and
//! [`Decodable`] name the value types both can bind and decode; [`Query`] is the one query
//! builder the shared code writes its statements with (`$1`, `$2`, … placeholders, which both
//! SQLite and PostgreSQL accept).

use std::borrow::Cow;
use std::future::Future;

use sqlx::error::BoxDynError;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, AssertSqlSafe, Database, Decode, Encode, Postgres, Row, Sqlite, Type};

/// A value both databases can bind as a parameter (encoded at once: `'q` is only the borrow of
/// the value being encoded, so `Option<&str>` binds like `&str`).
pub trait Bindable<'q>:
    Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}
impl<'q, T> Bindable<'q> for T where
    T: Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}

/// A value both databases can decode from a column.
pub trait Decodable:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> Decodable for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A result row, read by column name or position.
pub trait Columns: Send {
    /// The value of column `name`.
    fn try_get<T: Decodable>(&self, name: &str) -> Result<T, sqlx::Error>;
    /// The value of the column at `index` (for one-column results).
    fn try_get_at<T: Decodable>(&self, index: usize) -> Result<T, sqlx::Error>;
}

impl Columns for SqliteRow {
    fn try_get<T: Decodable>(&self, name: &str) -> Result<T, sqlx::Error> {
        Row::try_get(self, name)
    }
    fn try_get_at<T: Decodable>(&self, index: usize) -> Result<T, sqlx::Error> {
        Row::try_get(self, index)
    }
}

impl Columns for PgRow {
    fn try_get<T: Decodable>(&self, name: &str) -> Result<T, sqlx::Error> {
        Row::try_get(self, name)
    }
    fn try_get_at<T: Decodable>(&self, index: usize) -> Result<T, sqlx::Error> {
        Row::try_get(self, index)
    }
}

/// The statement text of a [`Query`]: static, or built at run time from trusted fragments.
pub type SqlText = Cow<'static, str>;

/// The operations the shared SQL runs on a connection of one database.
pub trait Driver: Database<Row: Columns, Arguments: Send, Connection: Send> {
    /// Adds `value` to `arguments`.
    fn add<'q, T: Bindable<'q>>(
        arguments: &mut Self::Arguments,
        value: T,
    ) -> Result<(), BoxDynError>;
    /// Runs a statement; the number of rows it changed.
    fn execute(
        conn: &mut Self::Connection,
        sql: SqlText,
        arguments: Self::Arguments,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    /// Runs a query; every row.
    fn fetch_all(
        conn: &mut Self::Connection,
        sql: SqlText,
        arguments: Self::Arguments,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
    /// Runs a query; its first row, if any.
    fn fetch_optional(
        conn: &mut Self::Connection,
        sql: SqlText,
        arguments: Self::Arguments,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;
    /// Runs a script of several statements without parameters (a migration).
    fn execute_script(
        conn: &mut Self::Connection,
        script: &'static str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Implements [`Driver`] for a concrete sqlx database: the bodies are the same for both, and
/// concrete types are what let them compile without higher-ranked bounds.
macro_rules! impl_driver {
    ($db:ty) => {
        impl Driver for $db {
            fn add<'q, T: Bindable<'q>>(
                arguments: &mut Self::Arguments,
                value: T,
            ) -> Result<(), BoxDynError> {
                arguments.add(value)
            }

            async fn execute(
                conn: &mut Self::Connection,
                sql: SqlText,
                arguments: Self::Arguments,
            ) -> Result<u64, sqlx::Error> {
                let done = sqlx::query_with(AssertSqlSafe(sql), arguments)
                    .execute(conn)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn fetch_all(
                conn: &mut Self::Connection,
                sql: SqlText,
                arguments: Self::Arguments,
            ) -> Result<Vec<Self::Row>, sqlx::Error> {
                sqlx::query_with(AssertSqlSafe(sql), arguments)
                    .fetch_all(conn)
                    .await
            }

            async fn fetch_optional(
                conn: &mut Self::Connection,
                sql: SqlText,
                arguments: Self::Arguments,
            ) -> Result<Option<Self::Row>, sqlx::Error> {
                sqlx::query_with(AssertSqlSafe(sql), arguments)
                    .fetch_optional(conn)
                    .await
            }

            async fn execute_script(
                conn: &mut Self::Connection,
                script: &'static str,
            ) -> Result<(), sqlx::Error> {
                sqlx::raw_sql(script).execute(conn).await.map(|_| ())
            }
        }
    };
}

impl_driver!(Sqlite);
impl_driver!(Postgres);

/// A statement and its parameters, for any [`Driver`].
///
/// Placeholders are `$1`, `$2`, … in bind order ([`Query::push_bind`] writes them for statements
/// built piece by piece). A value that cannot be encoded fails the statement when it runs.
pub struct Query<D: Driver> {
    sql: SqlText,
    arguments: D::Arguments,
    bound: usize,
    error: Option<BoxDynError>,
}

impl<D: Driver> std::fmt::Debug for Query<D> {
    /// The statement only: parameters may be secrets (hashes, sealed values).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("sql", &self.sql)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl<D: Driver> Query<D> {
    /// A statement with no parameters bound yet.
    pub fn new(sql: impl Into<SqlText>) -> Self {
        Self {
            sql: sql.into(),
            arguments: D::Arguments::default(),
            bound: 0,
            error: None,
        }
    }

    /// Binds the next parameter (`$n` for the n-th call).
    #[must_use]
    pub fn bind<'q, T: Bindable<'q>>(mut self, value: T) -> Self {
        self.add(value);
        self
    }

    fn add<'q, T: Bindable<'q>>(&mut self, value: T) {
        self.bound += 1;
        if let Err(error) = D::add(&mut self.arguments, value)
            && self.error.is_none()
        {
            self.error = Some(error);
        }
    }

    /// Appends trusted SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Appends a placeholder for `value` and binds it.
    pub fn push_bind<'q, T: Bindable<'q>>(&mut self, value: T) -> &mut Self {
        self.add(value);
        let placeholder = format!("${}", self.bound);
        self.sql.to_mut().push_str(&placeholder);
        self
    }

    fn ready(self) -> Result<(SqlText, D::Arguments), sqlx::Error> {
        match self.error {
            Some(error) => Err(sqlx::Error::Encode(error)),
            None => Ok((self.sql, self.arguments)),
        }
    }

    /// Runs the statement; the number of rows it changed.
    pub async fn execute(self, conn: &mut D::Connection) -> Result<u64, sqlx::Error> {
        let (sql, arguments) = self.ready()?;
        D::execute(conn, sql, arguments).await
    }

    /// Runs the query; every row.
    pub async fn fetch_all(self, conn: &mut D::Connection) -> Result<Vec<D::Row>, sqlx::Error> {
        let (sql, arguments) = self.ready()?;
        D::fetch_all(conn, sql, arguments).await
    }

    /// Runs the query; its first row, if any.
    pub async fn fetch_optional(
        self,
        conn: &mut D::Connection,
    ) -> Result<Option<D::Row>, sqlx::Error> {
        let (sql, arguments) = self.ready()?;
        D::fetch_optional(conn, sql, arguments).await
    }

    /// Runs the query; its first row, which must exist.
    pub async fn fetch_one(self, conn: &mut D::Connection) -> Result<D::Row, sqlx::Error> {
        self.fetch_optional(conn)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs the query; the first column of its first row, which must exist.
    pub async fn fetch_scalar<T: Decodable>(
        self,
        conn: &mut D::Connection,
    ) -> Result<T, sqlx::Error> {
        self.fetch_one(conn).await?.try_get_at(0)
    }

    /// Runs the query; the first column of its first row, if there is a row.
    pub async fn fetch_optional_scalar<T: Decodable>(
        self,
        conn: &mut D::Connection,
    ) -> Result<Option<T>, sqlx::Error> {
        self.fetch_optional(conn)
            .await?
            .map(|row| row.try_get_at(0))
            .transpose()
    }
}
