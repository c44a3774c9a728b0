//! Writes and their audit records commit together: if the record cannot be written, the change
//! does not happen. Many concurrent audit-bearing writes all land.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::sync::Arc;

use common::{credential, entry, new_user, user};
use koryphaios_core::credentials::CredentialFilter;
use koryphaios_core::store::{AuditStore, CredentialStore, SchemaMigrator, Store, UserStore};
use koryphaios_core::users::RegistrationPolicy;
use koryphaios_store_postgres::PostgresStore;
use koryphaios_store_postgres::testing::{fresh_database_url, test_settings};
use sqlx::PgPool;
use time::OffsetDateTime;

async fn setup() -> (String, PostgresStore) {
    let url = fresh_database_url().await;
    let store = koryphaios_store_postgres::connect(&url, &test_settings())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    store
        .install_audit_key(std::sync::Arc::new(
            koryphaios_core::testing::contract_audit_key(),
        ))
        .await
        .unwrap();
    (url, store)
}

#[tokio::test]
async fn a_failing_audit_write_stops_the_change_from_being_stored() {
    let (url, store) = setup().await;
    let ada = user(&store, "ada").await;
    let pool = PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'audit log unavailable'; END $$;
         CREATE TRIGGER audit_down BEFORE INSERT ON audit_events
           FOR EACH ROW EXECUTE FUNCTION audit_down();",
    )
    .execute(&pool)
    .await
    .unwrap();

    let (cred, version) = credential(&ada);
    let create = entry(&ada, "credential_create", ("credential", cred.id.as_str()));
    let result = store.insert_credential(&cred, &version, &create).await;
    assert!(
        result.is_err(),
        "the create must fail when its audit record cannot be written"
    );
    assert!(
        store
            .find_credential(&ada.id, &cred.id)
            .await
            .unwrap()
            .is_none()
    );
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM credential_versions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let registered = store
        .register_user(
            new_user("bob"),
            RegistrationPolicy::Open,
            &common::anonymous("register"),
        )
        .await;
    assert!(registered.is_err());
    assert_eq!(store.count_users().await.unwrap(), 1);

    // Once the audit log works again, so do writes.
    sqlx::query("DROP TRIGGER audit_down ON audit_events")
        .execute(&pool)
        .await
        .unwrap();
    store
        .insert_credential(&cred, &version, &create)
        .await
        .unwrap();
    assert!(
        store
            .find_credential(&ada.id, &cred.id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn concurrent_audit_bearing_writes_all_land() {
    let (_url, store) = setup().await;
    let store = Arc::new(store);
    let ada = user(&store, "ada").await;
    let (cred, version) = credential(&ada);
    store
        .insert_credential(
            &cred,
            &version,
            &entry(&ada, "credential_create", ("credential", cred.id.as_str())),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, ada, id) = (Arc::clone(&store), ada.clone(), cred.id.clone());
        tasks.push(tokio::spawn(async move {
            let record = entry(&ada, "credential_access", ("credential", id.as_str()));
            if i % 2 == 0 {
                store
                    .record_credential_access(&ada.id, &id, OffsetDateTime::now_utc(), &record)
                    .await
            } else {
                store.append_audit(&record).await
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let trail = store
        .audit_for_resource(&ada.id, "credential", cred.id.as_str(), 1000)
        .await
        .unwrap();
    assert_eq!(trail.len(), 201);
    let listed = store
        .list_credentials(
            &ada.id,
            &CredentialFilter::default(),
            OffsetDateTime::now_utc(),
            &koryphaios_core::pagination::PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(listed[0].last_used_at.is_some());
    let store: Arc<dyn Store> = store;
    store.close().await;
}
