//! Test databases on the PostgreSQL that scripts/postgres.sh starts (scripts/test.sh does it
//! for every run): each test gets a database of its own, so tests run in parallel.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The variable scripts/postgres.sh exports: the URL of its server's `postgres` database.
pub const URL_VARIABLE: &str = "FINETUNE_TEST_DATABASE_URL";

/// A fresh, empty database, dropped by [`TestDatabase::drop`] (one a failed test leaves
/// behind goes with the throwaway server).
pub struct TestDatabase {
    /// Its URL, for `PgStore::connect`.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDatabase {
    /// Creates the database; fails the test, saying how to start a server, when there is none.
    pub async fn create() -> TestDatabase {
        let admin = std::env::var(URL_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{URL_VARIABLE} is not set: run the PostgreSQL tests through scripts/test.sh, or start \
                 a server first with `eval \"$(scripts/postgres.sh start)\"` (stop it with \
                 `scripts/postgres.sh stop`)"
            )
        });
        let name = format!("finetune_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test server at {URL_VARIABLE}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        // postgres://user@host:port/db?params -> the same with our database.
        let (base, params) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, p)| (b, Some(p)));
        let (server, _) = base.rsplit_once('/').expect("a database URL has a path");
        let url = match params {
            Some(p) => format!("{server}/{name}?{p}"),
            None => format!("{server}/{name}"),
        };
        TestDatabase { url, admin, name }
    }

    /// Makes the database refuse connections and closes the open ones (`true`), as an
    /// unreachable database looks to a replica; `false` lets connections in again.
    pub async fn refuse_connections(&self, refuse: bool) {
        let mut conn = PgConnection::connect(&self.admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {}",
            self.name, !refuse
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        if refuse {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&self.name)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.close().await.unwrap();
    }

    /// Drops the database, closing whatever connections still use it.
    pub async fn drop(self) {
        let mut conn = PgConnection::connect(&self.admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
}
