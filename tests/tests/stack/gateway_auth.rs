//! Authentication and authorization through HTTP: the authorization matrix,
//! revocation on logout, token expiry with sliding renewal, and the rate
//! limits of login (per account and IP, per IP, per account; parallel
//! guesses included) and registration (per IP and in total).

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
        (Method::GET, "/api/v1/admin/console/overview".into(), None, 401, 403, 200),
        (Method::GET, format!("/api/v1/admin/console/sagas/{order}"), None, 401, 403, 200),
        (Method::GET, "/api/v1/admin/console/dlq".into(), None, 401, 403, 200),
        (Method::GET, "/api/v1/admin/console/dlq/audit".into(), None, 401, 403, 200),
    ];
    // A token of the right shape that was never issued, and one whose session
    // is gone (revoked: what an expired one also is, a session Redis no longer has).
    let forged = "A".repeat(43);
    let (ended, _) = api.customer().await;
    let logout = api.call(Method::POST, "/api/v1/auth/logout", Some(&ended), &[], None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let mut failures = Vec::new();
    for (method, path, body, anonymous, as_customer, as_admin) in matrix {
        // Wherever a token is required, a bad one is refused as no token is.
        let bad = if anonymous == 401 { 401 } else { anonymous };
        for (who, token, expected) in [
            ("anonymous", None, anonymous),
            ("forged token", Some(forged.as_str()), bad),
            ("ended session", Some(ended.as_str()), bad),
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

/// Logs in as `email` from `api`'s address; the status.
async fn login_status(api: &Api, email: &str, password: &str) -> StatusCode {
    api.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await.status
}

fn from(gateway: &PrivateGateway, last_octet: u8) -> Api {
    Api::from_address(gateway.api.base.clone(), std::net::IpAddr::from([127, 0, 0, last_octet]))
}

#[tokio::test]
async fn failed_logins_are_limited_per_account_and_ip_per_ip_and_per_account() {
    let stack = stack();
    let gateway = PrivateGateway::start(
        &stack,
        &[
            ("LOGIN_LIMIT_PER_ACCOUNT_IP", "3"),
            ("LOGIN_LIMIT_PER_IP", "5"),
            ("LOGIN_LIMIT_PER_ACCOUNT", "6"),
            ("LOGIN_LIMIT_WINDOW_SECS", "120"),
        ],
    )
    .await;
    let (attacker, owner) = (from(&gateway, 2), from(&gateway, 3));
    let (email, password, _) = gateway.api.register_customer().await;
    for attempt in 1..=3 {
        assert_eq!(login_status(&attacker, &email, "not the password").await, StatusCode::UNAUTHORIZED, "{attempt}");
    }
    // The account is locked for the attacker's address, even with the right password...
    let locked = attacker.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", locked.body);
    assert_eq!(locked.body["code"], "too_many_requests");
    let retry: u64 = locked.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After seconds");
    assert!((1..=120).contains(&retry), "Retry-After {retry}");
    // ...but not for its owner at another address.
    assert_eq!(login_status(&owner, &email, &password).await, StatusCode::OK, "the owner keeps access");

    // Two failures on other accounts use up the attacker address's 5.
    for _ in 0..2 {
        let nobody = format!("{}@example.com", unique("nobody"));
        assert_eq!(login_status(&attacker, &nobody, "whatever1").await, StatusCode::UNAUTHORIZED);
    }
    let (fresh_email, fresh_password, _) = gateway.api.register_customer().await;
    let fresh = json!({ "email": fresh_email, "password": fresh_password });
    let blocked = attacker.post("/api/v1/auth/login", None, &fresh).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS, "the address is over its limit: {:?}", blocked.body);
    assert!(blocked.retry_after.is_some());
    assert_eq!(login_status(&owner, &fresh_email, &fresh_password).await, StatusCode::OK);

    // Guesses at one account from many addresses: 3 more fill its 6, and
    // then it is locked for every address until the window ends.
    for octet in [4, 5, 6] {
        assert_eq!(login_status(&from(&gateway, octet), &email, "wrong again").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login_status(&owner, &email, &password).await, StatusCode::TOO_MANY_REQUESTS, "distributed lockout");

    // The stack's own gateway keeps its own counters.
    let shared = Api::of_stack(&stack);
    shared.login(&fresh_email, &fresh_password).await;
}

#[tokio::test]
async fn successful_logins_are_limited_per_account_and_ip_and_a_user_holds_a_few_sessions() {
    let stack = stack();
    let gateway = PrivateGateway::start(
        &stack,
        &[
            ("LOGIN_SUCCESS_LIMIT_PER_ACCOUNT", "4"),
            ("LOGIN_SUCCESS_LIMIT_PER_IP", "6"),
            ("SESSIONS_PER_USER", "2"),
            ("LOGIN_LIMIT_WINDOW_SECS", "120"),
        ],
    )
    .await;
    let (email, password, _) = gateway.api.register_customer().await;
    let client = from(&gateway, 7);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(client.login(&email, &password).await);
    }
    // Two sessions at most: the first ended when the third began, the others live.
    assert_eq!(client.get("/api/v1/me", Some(&tokens[0])).await.status, StatusCode::UNAUTHORIZED, "the oldest ended");
    for token in &tokens[1..] {
        assert_eq!(client.get("/api/v1/me", Some(token)).await.status, StatusCode::OK);
    }
    // The fourth success fills the account's 4: the fifth is refused, from any address.
    client.login(&email, &password).await;
    let refused =
        from(&gateway, 8).post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", refused.body);
    assert!(refused.retry_after.is_some());
    // The address's 6: two more successes of another account from it, then it is full;
    // that account still logs in from elsewhere.
    let (other, other_password, _) = gateway.api.register_customer().await;
    for _ in 0..2 {
        assert_eq!(login_status(&client, &other, &other_password).await, StatusCode::OK);
    }
    assert_eq!(
        login_status(&client, &other, &other_password).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the address is full"
    );
    assert_eq!(login_status(&from(&gateway, 9), &other, &other_password).await, StatusCode::OK);
    // A wrong password is no success: it counts where failures count, not here, so the
    // account's fourth success still goes through, and only a fifth is refused.
    assert_eq!(login_status(&from(&gateway, 9), &other, "not it").await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_status(&from(&gateway, 9), &other, &other_password).await, StatusCode::OK, "the fourth");
    assert_eq!(login_status(&from(&gateway, 9), &other, &other_password).await, StatusCode::TOO_MANY_REQUESTS);
}

/// The cap counts live sessions: a session logged out meanwhile does not push out an older
/// one that is still in use.
#[tokio::test]
async fn sessions_logged_out_do_not_count_against_the_cap() {
    let stack = stack();
    let gateway = PrivateGateway::start(&stack, &[("SESSIONS_PER_USER", "2")]).await;
    let api = &gateway.api;
    let (email, password, _) = api.register_customer().await;
    let kept = api.login(&email, &password).await;
    for _ in 0..3 {
        let brief = api.login(&email, &password).await;
        let out = api.call(Method::POST, "/api/v1/auth/logout", Some(&brief), &[], None).await;
        assert_eq!(out.status, StatusCode::NO_CONTENT);
    }
    let newest = api.login(&email, &password).await;
    assert_eq!(api.get("/api/v1/me", Some(&kept)).await.status, StatusCode::OK, "two live sessions: both stay");
    assert_eq!(api.get("/api/v1/me", Some(&newest)).await.status, StatusCode::OK);
    // A third live one ends the oldest.
    api.login(&email, &password).await;
    assert_eq!(api.get("/api/v1/me", Some(&kept)).await.status, StatusCode::UNAUTHORIZED);
}

/// Two accounts flood correct logins from a handful of addresses, every login at once,
/// with the shipped limits: each account's successes stop at its limit at the gateway, and
/// behind it each account holds a small share of the password queue, so another user's
/// login in the middle of the flood is checked and answered, not refused for a full queue.
#[tokio::test]
async fn a_flood_of_correct_logins_from_two_accounts_does_not_starve_another_login() {
    let stack = stack();
    let gateway = PrivateGateway::start(
        &stack,
        &[
            ("LOGIN_SUCCESS_LIMIT_PER_ACCOUNT", "20"),
            ("LOGIN_SUCCESS_LIMIT_PER_IP", "200"),
            ("SESSIONS_PER_USER", "10"),
        ],
    )
    .await;
    let flooders = [gateway.api.register_customer().await, gateway.api.register_customer().await];
    let (email, password, _) = gateway.api.register_customer().await;
    let flood = futures::future::join_all((0..120).map(|i| {
        let (flooder, api) = (&flooders[i % 2], from(&gateway, 10 + (i % 4) as u8));
        async move { login_status(&api, &flooder.0, &flooder.1).await }
    }));
    let victim = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        login_status(&from(&gateway, 20), &email, &password).await
    };
    let (statuses, victim) = futures::future::join(flood, victim).await;
    assert_eq!(victim, StatusCode::OK, "the other user's login during the flood");
    let count = |status: StatusCode| statuses.iter().filter(|s| **s == status).count();
    let (ok, limited) = (count(StatusCode::OK), count(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(ok + limited + count(StatusCode::SERVICE_UNAVAILABLE), 120, "{statuses:?}");
    assert!(ok <= 40, "at most 20 successes per account: {ok}");
    assert!(limited >= 80, "the rest refused at the gateway: {statuses:?}");
}

#[tokio::test]
async fn parallel_wrong_passwords_count_before_any_is_checked() {
    let stack = stack();
    let gateway = PrivateGateway::start(&stack, &[("LOGIN_LIMIT_PER_ACCOUNT_IP", "5")]).await;
    let (email, _, _) = gateway.api.register_customer().await;
    let guesses = (0..50).map(|i| {
        let api = &gateway.api;
        let email = &email;
        async move { login_status(api, email, &format!("guess number {i}")).await }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + refused, 50, "only 401 and 429: {statuses:?}");
    assert_eq!(checked, 5, "exactly the limit reached the password check: {statuses:?}");
}

#[tokio::test]
async fn registrations_are_limited_per_ip_and_in_total_taken_emails_included() {
    let stack = stack();
    let gateway = PrivateGateway::start(
        &stack,
        &[("REGISTER_LIMIT_PER_IP", "3"), ("REGISTER_LIMIT_TOTAL", "5"), ("REGISTER_LIMIT_WINDOW_SECS", "120")],
    )
    .await;
    let register = |api: Api, email: String| async move {
        let body = json!({ "email": email, "password": "correct horse battery" });
        api.post("/api/v1/auth/register", None, &body).await
    };
    let (first, second) = (from(&gateway, 2), from(&gateway, 3));
    let email = format!("{}@example.com", unique("user"));
    assert_eq!(register(first.clone(), email.clone()).await.status, StatusCode::CREATED);
    // A taken email counts too: enumerating accounts through the 409 is limited.
    assert_eq!(register(first.clone(), email.clone()).await.status, StatusCode::CONFLICT);
    let other = format!("{}@example.com", unique("user"));
    assert_eq!(register(first.clone(), other).await.status, StatusCode::CREATED);
    let over = register(first.clone(), format!("{}@example.com", unique("user"))).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", over.body);
    let retry: u64 = over.retry_after.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After seconds");
    assert!((1..=120).contains(&retry), "Retry-After {retry}");
    // Another address has its own 3, but all of them together only 5.
    for _ in 0..2 {
        let reply = register(second.clone(), format!("{}@example.com", unique("user"))).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    let third = register(from(&gateway, 4), format!("{}@example.com", unique("user"))).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS, "the total is used up: {:?}", third.body);
}

/// `/readyz` of `gateway` once it has looked at its admin account: (status, the account's check).
async fn admin_check(gateway: &PrivateGateway) -> (StatusCode, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ready = gateway.api.get("/readyz", None).await;
        let check = ready.body["checks"]["admin_account"].as_str().unwrap_or_default().to_owned();
        if !check.is_empty() && check != "pending" {
            return (ready.status, check);
        }
        assert!(std::time::Instant::now() < deadline, "the admin account stays pending: {:?}", ready.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_admin_email_taken_by_another_account_keeps_the_gateway_unready_with_the_reason() {
    let stack = stack();
    let (email, password, _) = Api::of_stack(&stack).register_customer().await;

    let other_password = PrivateGateway::spawn(
        &stack,
        &[("ADMIN_EMAIL", email.as_str()), ("ADMIN_PASSWORD", "not the customer's password")],
    )
    .await;
    let (status, check) = admin_check(&other_password).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(check, "the admin email belongs to an account with another password");

    let not_admin =
        PrivateGateway::spawn(&stack, &[("ADMIN_EMAIL", email.as_str()), ("ADMIN_PASSWORD", password.as_str())]).await;
    let (status, check) = admin_check(&not_admin).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(check, "the admin email belongs to an account without the admin role");
}

#[tokio::test]
async fn the_built_in_admin_password_is_refused_on_an_address_others_reach() {
    let stack = stack();
    let run = tokio::process::Command::new(stack.binary("gateway"))
        .env("LISTEN_ADDR", "0.0.0.0:0")
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .env("ADMIN_PASSWORD", "saga-admin-local")
        .env_remove("ALLOW_DEFAULT_ADMIN")
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run).await.expect("it stops at once").expect("runs");
    assert!(!output.status.success(), "it must not start");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("ADMIN_PASSWORD is a placeholder everyone knows"), "{log}");
    assert!(!log.contains("saga-admin-local"), "the password itself is not logged: {log}");
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_it_is_used() {
    let stack = stack();
    let gateway = PrivateGateway::start(&stack, &[("SESSION_TTL_SECS", "3"), ("SESSION_MAX_SECS", "5")]).await;
    let api = &gateway.api;
    let (email, password, _) = api.register_customer().await;
    let login = api.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
    let token = login.body["token"].as_str().expect("token").to_owned();
    let time = |field: &str| {
        let value = login.body[field].as_str().unwrap_or_else(|| panic!("{field}: {:?}", login.body));
        chrono::DateTime::parse_from_rfc3339(value).expect("an RFC 3339 time")
    };
    let (sliding, absolute) = (time("expires_at"), time("absolute_expires_at"));
    assert!((absolute - sliding).num_seconds() >= 1, "{:?}", login.body);

    // Used every second, well within its 3-second sliding TTL: alive at
    // first, then refused for good once its 5 seconds are over.
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        statuses.push((started.elapsed().as_secs_f32(), api.get("/api/v1/me", Some(&token)).await.status));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(statuses.first().map(|s| s.1), Some(StatusCode::OK), "{statuses:?}");
    let first_refusal = statuses.iter().position(|s| s.1 == StatusCode::UNAUTHORIZED).expect("refused at the end");
    assert!(statuses[first_refusal..].iter().all(|s| s.1 == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert!(statuses[first_refusal].0 >= 3.5, "not before its lifetime: {statuses:?}");
}

#[tokio::test]
async fn an_event_stream_ends_when_its_session_is_revoked() {
    use futures::StreamExt;
    let stack = stack();
    let gateway = PrivateGateway::start(&stack, &[("SESSION_CHECK_MS", "200")]).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let response = api
        .http
        .get(api.url("/api/v1/admin/console/overview/stream"))
        .bearer_auth(&admin)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: overview") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next()).await.expect("a first overview");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("more").expect("bytes")));
    }
    let logout = api.call(reqwest::Method::POST, "/api/v1/auth/logout", Some(&admin), &[], None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let rest = tokio::time::timeout(Duration::from_secs(15), async {
        let mut rest = String::new();
        while let Some(chunk) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
        }
        rest
    })
    .await
    .expect("the stream ends after its session is revoked");
    assert!(rest.contains("event: error") && rest.contains("the session has ended"), "{rest}");
}
