//! Writes and their audit records commit together, on both backends: if the record cannot be
//! written, the change does not happen. Many concurrent audit-bearing writes through the group
//! commit all land.
#![expect(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use std::sync::Arc;

use common::{Backend, TestDb, anonymous, credential, entry, new_user, user};
use koryphaios_core::credentials::CredentialFilter;
use koryphaios_core::pagination::PageRequest;
use koryphaios_core::users::RegistrationPolicy;
use time::OffsetDateTime;

async fn a_failing_audit_write_stops_the_change_from_being_stored(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
    db.break_audit_log().await;

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
    assert_eq!(
        db.texts("SELECT credential_id FROM credential_versions")
            .await,
        Vec::<String>::new()
    );
    let registered = store
        .register_user(
            new_user("bob"),
            RegistrationPolicy::Open,
            &anonymous("register"),
        )
        .await;
    assert!(registered.is_err());
    assert_eq!(store.count_users().await.unwrap(), 1);

    // Once the audit log works again, so do writes.
    db.repair_audit_log().await;
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

async fn concurrent_audit_bearing_writes_all_land(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.keyed().await;
    let ada = user(store.as_ref(), "ada").await;
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
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(listed[0].last_used_at.is_some());
    store.close().await;
}

on_both_backends!(
    a_failing_audit_write_stops_the_change_from_being_stored,
    concurrent_audit_bearing_writes_all_land,
);
