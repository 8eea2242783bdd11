//! Authentication and authorization through HTTP: the authorization matrix,
//! revocation on logout, token expiry with sliding renewal, and the login
//! rate limit (per account and per IP).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use saga_tests::http::{Api, PrivateGateway};
use saga_tests::{stack, unique};
use serde_json::{Value, json};

/// (method, path, body, status for anonymous, for a customer, for the admin)
type Row<'a> = (Method, String, Option<&'a Value>, u16, u16, u16);

#[tokio::test]
async fn authorization_matrix() {
    let api = Api::of_stack(&stack());
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let (other, _) = api.customer().await;
    let product = api.create_product(&admin, 100, 100).await;
    api.credit(&admin, &customer_id, 1_000).await;
    let placed = api.place_order(&customer, &unique("key"), &json!([{ "product_id": product, "quantity": 1 }])).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order = placed.body["id"].as_str().expect("order id").to_owned();

    let new_product = json!({ "name": "matrix", "price_minor": 1 });
    let update = json!({ "price_minor": 100 });
    let stock = json!({ "delta": 1 });
    let credit = json!({ "amount_minor": 1 });
    let items = json!({ "items": [{ "product_id": product, "quantity": 1 }] });
    let matrix: Vec<Row> = vec![
        (Method::GET, "/api/v1/products".into(), None, 200, 200, 200),
        (Method::GET, format!("/api/v1/products/{product}"), None, 200, 200, 200),
        (Method::POST, "/api/v1/products".into(), Some(&new_product), 401, 403, 201),
        (Method::PATCH, format!("/api/v1/products/{product}"), Some(&update), 401, 403, 200),
        (Method::POST, format!("/api/v1/products/{product}/stock"), Some(&stock), 401, 403, 200),
        (Method::POST, format!("/api/v1/admin/users/{customer_id}/credit"), Some(&credit), 401, 403, 200),
        (Method::GET, "/api/v1/me".into(), None, 401, 200, 200),
        (Method::GET, "/api/v1/orders".into(), None, 401, 200, 200),
        (Method::GET, format!("/api/v1/orders/{order}"), None, 401, 200, 200),
        (Method::POST, "/api/v1/orders".into(), Some(&items), 401, 201, 201),
    ];
    let mut failures = Vec::new();
    for (method, path, body, anonymous, as_customer, as_admin) in matrix {
        for (who, token, expected) in [
            ("anonymous", None, anonymous),
            ("customer", Some(customer.as_str()), as_customer),
            ("admin", Some(admin.as_str()), as_admin),
        ] {
            let key = unique("key");
            let reply = api.call(method.clone(), &path, token, &[("Idempotency-Key", key.as_str())], body).await;
            if reply.status.as_u16() != expected {
                failures
                    .push(format!("{who} {method} {path}: expected {expected}, got {} {}", reply.status, reply.body));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Someone else's order does not exist for them, in any form.
    for path in [format!("/api/v1/orders/{order}"), format!("/api/v1/orders/{order}/events")] {
        let reply = api.get(&path, Some(&other)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {:?}", reply.body);
        assert_eq!(reply.body["code"], "not_found");
    }
    let theirs = api.get("/api/v1/orders", Some(&other)).await;
    assert_eq!(theirs.body["items"], json!([]), "{:?}", theirs.body);
}

#[tokio::test]
async fn logout_revokes_only_its_own_token() {
    let api = Api::of_stack(&stack());
    let (email, password, _) = api.register_customer().await;
    let first = api.login(&email, &password).await;
    let second = api.login(&email, &password).await;
    assert_ne!(first, second);
    assert_eq!(api.get("/api/v1/me", Some(&first)).await.status, StatusCode::OK);

    let logout = api.call(Method::POST, "/api/v1/auth/logout", Some(&first), &[], None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let after = api.get("/api/v1/me", Some(&first)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.body["message"], "invalid or expired token");
    let again = api.call(Method::POST, "/api/v1/auth/logout", Some(&first), &[], None).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.get("/api/v1/me", Some(&second)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_password_is_401_and_the_token_is_opaque() {
    let api = Api::of_stack(&stack());
    let (email, password, _) = api.register_customer().await;
    let wrong = api.post("/api/v1/auth/login", None, &json!({ "email": email, "password": "not the password" })).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["message"], "wrong email or password");
    let nobody = api
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": format!("{}@example.com", unique("nobody")), "password": password }),
        )
        .await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);
    assert_eq!(nobody.body, wrong.body, "unknown email and wrong password must look the same");

    let login =
        api.post("/api/v1/auth/login", None, &json!({ "email": email.to_uppercase(), "password": password })).await;
    assert_eq!(login.status, StatusCode::OK, "emails are case-insensitive: {:?}", login.body);
    let token = login.body["token"].as_str().expect("token");
    assert_eq!(token.len(), 43, "32 random bytes in base64url");
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    assert!(login.body["expires_in"].as_u64().is_some_and(|s| s > 0));

    let again = api.post("/api/v1/auth/register", None, &json!({ "email": email, "password": password })).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["message"], "this email is already registered");
}

#[tokio::test]
async fn tokens_expire_unless_used() {
    let stack = stack();
    let gateway = PrivateGateway::start(&stack, &[("SESSION_TTL_SECS", "3")]).await;
    let api = &gateway.api;
    let (email, password, _) = api.register_customer().await;
    let login = api.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
    assert_eq!(login.body["expires_in"], 3);
    let token = login.body["token"].as_str().expect("token").to_owned();

    // Used every second, the token outlives its 3-second TTL (sliding expiry).
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let me = api.get("/api/v1/me", Some(&token)).await;
        assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    }
    // Left alone past its TTL, it is gone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let me = api.get("/api/v1/me", Some(&token)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.body["message"], "invalid or expired token");
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_account_and_per_ip() {
    let stack = stack();
    let gateway = PrivateGateway::start(
        &stack,
        &[("LOGIN_LIMIT_PER_ACCOUNT", "3"), ("LOGIN_LIMIT_PER_IP", "5"), ("LOGIN_LIMIT_WINDOW_SECS", "120")],
    )
    .await;
    let api = &gateway.api;
    let (email, password, _) = api.register_customer().await;
    let wrong = json!({ "email": email, "password": "not the password" });
    for attempt in 1..=3 {
        let reply = api.post("/api/v1/auth/login", None, &wrong).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // The account is locked for the window, even with the right password.
    let locked = api.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", locked.body);
    assert_eq!(locked.body["code"], "too_many_requests");
    let retry: u64 = locked.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After seconds");
    assert!((1..=120).contains(&retry), "Retry-After {retry}");

    // Two more failures on other accounts use up the IP's 5.
    for _ in 0..2 {
        let other = json!({ "email": format!("{}@example.com", unique("nobody")), "password": "whatever1" });
        assert_eq!(api.post("/api/v1/auth/login", None, &other).await.status, StatusCode::UNAUTHORIZED);
    }
    let (fresh_email, fresh_password, _) = api.register_customer().await;
    let blocked =
        api.post("/api/v1/auth/login", None, &json!({ "email": fresh_email, "password": fresh_password })).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS, "the IP is over its limit: {:?}", blocked.body);
    assert!(blocked.retry_after.is_some());

    // The stack's own gateway keeps its own counters.
    let shared = Api::of_stack(&stack);
    shared.login(&fresh_email, &fresh_password).await;
}
