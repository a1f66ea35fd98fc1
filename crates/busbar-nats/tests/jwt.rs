//! Decentralised JWT authentication: a nats-server in operator mode, trusting an operator
//! and one account made here, and a client presenting a user JWT from a `.creds` file, whose
//! nkey seed signs the server's nonce.

use std::time::Duration;

use busbar_core::Connection;
use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_nats::NatsTransport;
use busbar_testkit::{BrokerProcess, NatsConfig, skip_if_missing};
use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use serde_json::json;

/// A signed NATS JWT (`ed25519-nkey`) with `claims`, issued by `issuer` for `subject`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = json!({
        "jti": format!("{}{now}", name.to_uppercase()),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// A user's `.creds` file contents: the JWT and the seed, in the layout NATS tools write.
fn creds(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

struct Trust {
    operator_jwt: String,
    account: KeyPair,
    account_jwt: String,
}

impl Trust {
    fn make() -> Trust {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "busbar-test-operator",
            json!({"type": "operator", "version": 2}),
        );
        let account_jwt = jwt(
            &operator,
            &account.public_key(),
            "busbar-test-account",
            json!({
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                           "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
                "type": "account",
                "version": 2,
            }),
        );
        Trust { operator_jwt, account, account_jwt }
    }

    /// A `.creds` file for a new user of the account, signed by `signer` (the account, or
    /// someone else for a forged one).
    fn user_creds(
        &self,
        signer: &KeyPair,
        dir: &std::path::Path,
        name: &str,
    ) -> std::path::PathBuf {
        let user = KeyPair::new_user();
        let user_jwt = jwt(
            signer,
            &user.public_key(),
            name,
            json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                   "type": "user", "version": 2}),
        );
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, creds(&user_jwt, &user.seed().expect("seed"))).expect("creds file");
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_jwt_from_a_creds_file_is_accepted_and_a_forged_one_refused() {
    let trust = Trust::make();
    let config = NatsConfig::new()
        .line(format!("operator: \"{}\"", trust.operator_jwt))
        .line("resolver: MEMORY")
        .line(format!(
            "resolver_preload: {{ {}: \"{}\" }}",
            trust.account.public_key(),
            trust.account_jwt
        ));
    let test = "a_user_jwt_from_a_creds_file_is_accepted";
    let Some(server) = skip_if_missing(test, BrokerProcess::nats_with_config(config).await) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("busbar-nats-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = |creds: &std::path::Path| format!("{}?creds={}", server.url(), creds.display());

    let good = trust.user_creds(&trust.account, &dir, "pump");
    let conn = Connection::new(std::sync::Arc::new(
        NatsTransport::connect(&url(&good), ConnectOptions::new()).await.expect("JWT accepted"),
    ));
    let mut sub = conn.subscribe("jwt/#").await.expect("subscribe");
    conn.publish_bytes("jwt/x", &b"signed in"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"signed in");

    // Signed by an account the operator never vouched for.
    let forged = trust.user_creds(&KeyPair::new_account(), &dir, "intruder");
    let err = NatsTransport::connect(&url(&forged), ConnectOptions::new())
        .await
        .err()
        .expect("a forged JWT must be refused");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");

    let missing = dir.join("nope.creds");
    let err = NatsTransport::connect(&url(&missing), ConnectOptions::new())
        .await
        .err()
        .expect("no creds file");
    assert_eq!(err.kind(), ConnectErrorKind::Config, "{err}");
    assert!(err.to_string().contains("nope.creds"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
