//! [`SqlStore`]: the one implementation of every storage port, over a [`Backend`].

use async_trait::async_trait;
use koryphaios_core::audit::chain::InstalledKey;
use koryphaios_core::group_commit::GroupCommit;
use koryphaios_core::store::{Store, StoreResult};

use crate::backend::Backend;
use crate::driver::Query;
use crate::group_commit::SqlBatchWriter;

/// The store: `B`'s pools, the audit chain key once installed, and the group-commit writer.
#[derive(Debug, Clone)]
pub struct SqlStore<B: Backend> {
    pub(crate) backend: B,
    pub(crate) chain: InstalledKey,
    pub(crate) group_commit: GroupCommit,
}

impl<B: Backend> SqlStore<B> {
    /// The store on `backend`, with its group-commit writer started (inside a tokio runtime).
    /// Does not migrate: call `migrate_up`.
    pub fn new(backend: B) -> Self {
        let chain = InstalledKey::default();
        let group_commit = GroupCommit::start(SqlBatchWriter {
            backend: backend.clone(),
            chain: chain.clone(),
        });
        Self {
            backend,
            chain,
            group_commit,
        }
    }

    /// Runs one statement in a write transaction of its own; the number of rows it changed.
    pub(crate) async fn execute_write(&self, query: Query<B::Db>) -> StoreResult<u64> {
        let mut tx = self.backend.write().await?;
        let changed = query.execute(&mut tx).await.map_err(B::map_err)?;
        tx.commit().await.map_err(B::map_err)?;
        Ok(changed)
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn ping(&self) -> StoreResult<()> {
        Query::<B::Db>::new("SELECT 1")
            .execute(&mut *self.backend.read().await?)
            .await
            .map_err(B::map_err)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        B::NAME
    }

    async fn close(&self) {
        self.backend.close().await;
    }
}
