//! Gateway-to-service traffic is mutual TLS, tried against the stack's
//! running services as someone on the internal network would: plaintext, TLS
//! without a certificate, a certificate from another authority, and the
//! authority's own certificate of another party are all refused; the
//! operator's certificate may ask health only; only the gateway's may call
//! the API. A service asked to serve plaintext off loopback refuses to start.

use std::process::Stdio;
use std::time::Duration;

use saga_proto::tls::{GATEWAY, OPERATOR};
use saga_proto::user::GetUserRequest;
use saga_proto::user::user_service_client::UserServiceClient;
use saga_stack::StackConfig;
use saga_stack::services::channel_as;
use saga_tests::stack;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn user_url(stack: &StackConfig) -> String {
    let user = saga_stack::config::services().into_iter().find(|s| s.name == "user").expect("user service");
    stack.grpc_url(user)
}

async fn connect(endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(5)).connect().await
}

/// GetUser of an id that does not exist: NOT_FOUND means the call reached the service's code.
async fn get_user(channel: Channel) -> Result<(), tonic::Status> {
    let request = GetUserRequest { user_id: uuid::Uuid::new_v4().to_string() };
    UserServiceClient::new(channel).get_user(request).await.map(drop)
}

#[tokio::test]
async fn only_the_gateways_certificate_reaches_the_api() {
    let stack = stack();
    let url = user_url(&stack);
    let gateway = connect(channel_as(&stack, GATEWAY, "user", &url).expect("endpoint")).await.expect("connects");
    assert_eq!(get_user(gateway).await.expect_err("no such user").code(), Code::NotFound, "the API answered");

    let operator = connect(channel_as(&stack, OPERATOR, "user", &url).expect("endpoint")).await.expect("connects");
    let health = HealthClient::new(operator.clone()).check(HealthCheckRequest { service: String::new() }).await;
    assert!(health.is_ok(), "the operator may ask health: {health:?}");
    let refused = get_user(operator).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Another party of the platform (a service's own certificate) is no gateway either.
    let order = connect(channel_as(&stack, "order", "user", &url).expect("endpoint")).await.expect("connects");
    assert_eq!(get_user(order).await.expect_err("refused").code(), Code::PermissionDenied);
}

#[tokio::test]
async fn plaintext_and_anonymous_tls_are_refused() {
    let stack = stack();
    let url = user_url(&stack);
    let plain = url.replace("https://", "http://");
    match connect(Endpoint::from_shared(plain).expect("url")).await {
        Err(_) => {}
        Ok(channel) => {
            let error = get_user(channel).await.expect_err("plaintext is refused");
            assert_ne!(error.code(), Code::NotFound, "a plaintext call reached the API: {error:?}");
        }
    }

    // TLS that trusts the service, without a certificate of its own.
    let files = saga_stack::tls::files(&stack, GATEWAY);
    let authority = Certificate::from_pem(std::fs::read(&files.ca).expect("ca"));
    let anonymous = ClientTlsConfig::new().ca_certificate(authority).domain_name("user");
    let endpoint = Endpoint::from_shared(url.clone()).expect("url").tls_config(anonymous).expect("tls");
    if let Ok(channel) = connect(endpoint).await {
        let error = get_user(channel).await.expect_err("a caller without a certificate is refused");
        assert_ne!(error.code(), Code::NotFound, "an anonymous call reached the API: {error:?}");
    }
}

#[tokio::test]
async fn a_certificate_of_another_authority_is_refused_and_so_is_a_server_of_another_name() {
    let stack = stack();
    let url = user_url(&stack);
    // A certificate issued for "gateway", by an authority the platform never trusted.
    let mut authority = rcgen::CertificateParams::default();
    authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(authority, rcgen::KeyPair::generate().expect("key"));
    let key = rcgen::KeyPair::generate().expect("key");
    let forged = rcgen::CertificateParams::new(vec![GATEWAY.to_owned()]).expect("params");
    let forged = forged.signed_by(&key, &issuer).expect("signed");
    let files = saga_stack::tls::files(&stack, GATEWAY);
    let trusted = Certificate::from_pem(std::fs::read(&files.ca).expect("ca"));
    let tls = ClientTlsConfig::new()
        .ca_certificate(trusted.clone())
        .identity(Identity::from_pem(forged.pem(), key.serialize_pem()))
        .domain_name("user");
    let endpoint = Endpoint::from_shared(url.clone()).expect("url").tls_config(tls).expect("tls");
    if let Ok(channel) = connect(endpoint).await {
        let error = get_user(channel).await.expect_err("a forged gateway certificate is refused");
        assert_ne!(error.code(), Code::NotFound, "a forged certificate reached the API: {error:?}");
    }

    // The gateway side: the user service's port does not pass for the order service.
    let misdirected = channel_as(&stack, GATEWAY, "order", &url).expect("endpoint");
    match connect(misdirected).await {
        Err(_) => {}
        Ok(channel) => {
            let error = get_user(channel).await.expect_err("the server is not the order service");
            assert_ne!(error.code(), Code::NotFound, "a server of another name was trusted: {error:?}");
        }
    }
}

#[tokio::test]
async fn a_service_refuses_plaintext_off_loopback_and_says_how_to_fix_it() {
    let stack = stack();
    let user = saga_stack::config::services().into_iter().find(|s| s.name == "user").expect("user service");
    let output = tokio::process::Command::new(stack.binary(&user.binary()))
        .env("LISTEN_ADDR", "0.0.0.0:0")
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", stack.database_url(user))
        .env("KAFKA_BROKERS", stack.kafka_brokers())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output).await.expect("exits at once").expect("runs");
    assert!(!output.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("refusing to serve plaintext gRPC on 0.0.0.0:0"), "{said}");
    assert!(said.contains("GRPC_TLS_CERT"), "{said}");
}
