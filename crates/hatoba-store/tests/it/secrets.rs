//! Secrets in the store: sealed versions in, the same bytes out, versions
//! listed without values, a taken version refused, removal; and the secret
//! versions a deployment records. On SQLite and PostgreSQL.

use hatoba_core::Millis;
use hatoba_store::{SealedSecret, Store, StoreError};

use crate::{env, new_deployment, postgres_store, sqlite_store};

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    secrets_story(&store).await;
}

#[tokio::test]
async fn postgres() {
    let Some((_pg, store)) = postgres_store().await else {
        return;
    };
    secrets_story(&store).await;
}

fn sealed(environment: &str, name: &str, version: u64, byte: u8) -> SealedSecret {
    SealedSecret {
        environment: env(environment),
        name: name.to_owned(),
        version,
        key_id: "k-0011223344556677".to_owned(),
        nonce: vec![byte; 12],
        ciphertext: vec![byte, 0, 255, byte],
        created_at: Millis(1_000 + version),
        created_by: "alice".to_owned(),
    }
}

async fn secrets_story(store: &dyn Store) {
    let prod = env("production");
    assert!(store.secret_versions(None).await.unwrap().is_empty());
    assert_eq!(store.secret(&prod, "DB_PASSWORD", 1).await.unwrap(), None);

    store
        .put_secret(sealed("production", "DB_PASSWORD", 1, 7))
        .await
        .unwrap();
    store
        .put_secret(sealed("production", "DB_PASSWORD", 2, 8))
        .await
        .unwrap();
    store
        .put_secret(sealed("staging", "DB_PASSWORD", 1, 9))
        .await
        .unwrap();
    // A version that exists is refused, and the stored one is unchanged.
    let taken = store
        .put_secret(sealed("production", "DB_PASSWORD", 2, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, StoreError::SecretVersionTaken { version: 2, .. }),
        "{taken:?}"
    );
    assert_eq!(
        store.secret(&prod, "DB_PASSWORD", 2).await.unwrap(),
        Some(sealed("production", "DB_PASSWORD", 2, 8))
    );

    let listed = store.secret_versions(Some(&prod)).await.unwrap();
    let seen: Vec<(String, u64, Millis)> = listed
        .iter()
        .map(|v| (v.name.clone(), v.version, v.created_at))
        .collect();
    assert_eq!(
        seen,
        [
            ("DB_PASSWORD".to_owned(), 1, Millis(1_001)),
            ("DB_PASSWORD".to_owned(), 2, Millis(1_002))
        ]
    );
    assert_eq!(store.secret_versions(None).await.unwrap().len(), 3);

    // A deployment keeps the versions it ran with.
    let d = store
        .create_deployment(new_deployment("web", "production", "v1", 5_000))
        .await
        .unwrap();
    let read = store.deployment(&d.id).await.unwrap().unwrap();
    assert_eq!(read.secrets, [("DB_PASSWORD".to_owned(), 3)].into());
    // And the exact image it ran (migration 0008); none for a process.
    assert_eq!(read.image_id, None);
    let pinned = store
        .create_deployment(hatoba_store::NewDeployment {
            image_id: Some("sha256:0123abcd".to_owned()),
            ..new_deployment("api", "production", "v1", 5_001)
        })
        .await
        .unwrap();
    assert_eq!(pinned.image_id.as_deref(), Some("sha256:0123abcd"));
    let read = store.deployment(&pinned.id).await.unwrap().unwrap();
    assert_eq!(read.image_id.as_deref(), Some("sha256:0123abcd"));

    assert_eq!(store.remove_secret(&prod, "DB_PASSWORD").await.unwrap(), 2);
    assert_eq!(store.remove_secret(&prod, "DB_PASSWORD").await.unwrap(), 0);
    assert_eq!(store.secret(&prod, "DB_PASSWORD", 1).await.unwrap(), None);
    assert_eq!(store.secret_versions(None).await.unwrap().len(), 1);
}
