//! The operator console answers the gateway only, tried against the stack's running console
//! as someone on the internal network would: plaintext, TLS without a certificate, a
//! certificate of another authority, and the authority's own certificates of other parties
//! (`operator`, a service) are all refused, so the admin header the console audits
//! redrives under is believed from the gateway alone. Any certified caller may ask its
//! health; a console without its TLS files refuses its API to everyone.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use saga_proto::tls::{CONSOLE, GATEWAY, OPERATOR};
use saga_stack::StackConfig;
use saga_stack::services::console_client_as;
use saga_tests::stack;
use serde_json::{Value, json};

const ADMIN_HEADER: &str = "x-saga-admin";

fn console_addr(stack: &StackConfig) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], stack.ports.console))
}

/// A client that trusts the stack's authority and reaches the console under its name,
/// presenting `identity` (PEM certificate and key) or nothing.
fn client_presenting(stack: &StackConfig, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let ca = std::fs::read(saga_stack::tls::files(stack, GATEWAY).ca).expect("the stack's authority");
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM certificate"))
        .resolve(CONSOLE, console_addr(stack))
        .timeout(Duration::from_secs(10));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().expect("a client")
}

fn by_name(stack: &StackConfig, path: &str) -> String {
    format!("https://{CONSOLE}:{}{path}", stack.ports.console)
}

/// The audit rows, read as the gateway.
async fn audit(stack: &StackConfig) -> Vec<Value> {
    let gateway = console_client_as(stack, GATEWAY).expect("the gateway's client");
    let reply = gateway
        .get(format!("{}/console/api/dlq/audit", stack.console_url()))
        .header(ADMIN_HEADER, "test")
        .send()
        .await
        .expect("the audit");
    assert_eq!(reply.status(), StatusCode::OK);
    reply.json().await.expect("the audit's JSON")
}

#[tokio::test]
async fn only_the_gateways_certificate_reaches_the_console() {
    let stack = stack();
    let url = |path: &str| format!("{}{path}", stack.console_url());

    let gateway = console_client_as(&stack, GATEWAY).expect("client");
    let reply = gateway.get(url("/console/api/dlq/audit")).header(ADMIN_HEADER, "gateway-test").send().await;
    assert_eq!(reply.expect("the gateway is answered").status(), StatusCode::OK);
    let page = gateway.get(url("/console")).send().await.expect("the page");
    assert_eq!(page.status(), StatusCode::OK);

    // The operator's certificate (cargo xtask) and a service's: certified, but not the gateway.
    for identity in [OPERATOR, "order"] {
        let client = console_client_as(&stack, identity).expect("client");
        for path in ["/console/api/dlq", "/console/api/dlq/audit", "/console/api/overview", "/console"] {
            let reply = client.get(url(path)).header(ADMIN_HEADER, "mallory").send().await.expect("answered");
            assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{identity} on {path}");
            let body: Value = reply.json().await.expect("an error body");
            assert_eq!(body["code"], "forbidden", "{body}");
        }
        let health = client.get(url("/healthz")).send().await.expect("health");
        assert_eq!(health.status(), StatusCode::OK, "{identity} may ask health");
    }

    // Mallory on the operator's machine asks for a redrive in an admin's name: refused,
    // and nothing is audited under that name.
    let mallory = format!("mallory-{}", uuid::Uuid::new_v4().simple());
    let operator = console_client_as(&stack, OPERATOR).expect("client");
    let reply = operator
        .post(url("/console/api/dlq/redrive"))
        .header(ADMIN_HEADER, &mallory)
        .json(&json!({ "confirm": true, "all": true }))
        .send()
        .await
        .expect("answered");
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert!(audit(&stack).await.iter().all(|row| row["admin"] != mallory.as_str()), "nothing under {mallory}");
}

#[tokio::test]
async fn plaintext_anonymous_and_foreign_callers_fail_the_handshake() {
    let stack = stack();
    let path = "/console/api/dlq/audit";

    // Plain HTTP to the TLS port.
    let plain = format!("http://127.0.0.1:{}{path}", stack.ports.console);
    let reply = reqwest::Client::new().get(&plain).header(ADMIN_HEADER, "mallory").send().await;
    assert!(reply.is_err(), "plaintext was answered: {:?}", reply.map(|r| r.status()));

    // TLS that trusts the console, without a certificate of its own.
    let anonymous = client_presenting(&stack, None);
    let health = anonymous.get(by_name(&stack, "/healthz")).send().await;
    assert!(health.is_err(), "health needs a certificate too: {:?}", health.map(|r| r.status()));
    let reply = anonymous.get(by_name(&stack, path)).header(ADMIN_HEADER, "mallory").send().await;
    assert!(reply.is_err(), "an anonymous caller was answered: {:?}", reply.map(|r| r.status()));

    // A certificate for "gateway" from an authority of the caller's own.
    let mut authority = rcgen::CertificateParams::default();
    authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(authority, rcgen::KeyPair::generate().expect("key"));
    let key = rcgen::KeyPair::generate().expect("key");
    let forged = rcgen::CertificateParams::new(vec![GATEWAY.to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("signed");
    let identity = reqwest::Identity::from_pem(format!("{}{}", forged.pem(), key.serialize_pem()).as_bytes())
        .expect("an identity");
    let reply = client_presenting(&stack, Some(identity)).get(by_name(&stack, path)).send().await;
    assert!(reply.is_err(), "a foreign authority's gateway was answered: {:?}", reply.map(|r| r.status()));

    // The real gateway's client, as the services' expects its server by name: the console's
    // certificate is no order service's.
    let tls = saga_stack::tls::files(&stack, GATEWAY).https_client("order").expect("client settings");
    let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("client");
    let reply = client.get(format!("{}{path}", stack.console_url())).send().await;
    assert!(reply.is_err(), "the gateway accepted a server of another name: {:?}", reply.map(|r| r.status()));
}

#[tokio::test]
async fn a_console_without_tls_refuses_its_api_to_everyone() {
    let stack = stack();
    let console = saga_tests::console::PrivateConsole::start_with(&stack, "", &[], false).await;
    assert!(console.url.starts_with("http://"), "{}", console.url);
    let client = reqwest::Client::new();
    for path in ["/console/api/dlq", "/console/api/dlq/audit", "/console/api/overview"] {
        let reply = client.get(format!("{}{path}", console.url)).header(ADMIN_HEADER, "mallory").send().await;
        let reply = reply.expect("answered");
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = reply.json().await.expect("an error body");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("TLS_CERT")), "{body}");
    }
    let reply = client
        .post(format!("{}/console/api/dlq/redrive", console.url))
        .header(ADMIN_HEADER, "mallory")
        .json(&json!({ "confirm": true, "all": true }))
        .send()
        .await
        .expect("answered");
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    // What holds no data still answers.
    for path in ["/healthz", "/console", "/console/assets/console.js"] {
        let reply = client.get(format!("{}{path}", console.url)).send().await.expect("answered");
        assert_eq!(reply.status(), StatusCode::OK, "{path}");
    }
    let log = std::fs::read_to_string(&console.log).expect("its log");
    assert!(log.contains("refuses its API to every caller"), "the start-up warning:\n{log}");
    assert!(log.contains("console request refused"), "each refusal is logged:\n{log}");
}
