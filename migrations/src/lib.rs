//! Schema migrations, shared by SQLite and PostgreSQL. Timestamps are BIGINT unix milliseconds and
//! JSON documents are TEXT, so the same conditional SQL runs unchanged on both backends.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_init;
mod m20261125_000002_avatar_asset;
mod m20261204_000003_session_livekit_url;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_init::Migration),
            Box::new(m20261125_000002_avatar_asset::Migration),
            Box::new(m20261204_000003_session_livekit_url::Migration),
        ]
    }
}
