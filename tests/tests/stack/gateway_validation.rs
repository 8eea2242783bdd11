//! Invalid inputs through HTTP: each gives its exact status, error code and
//! field-level message, always in the one error body of the gateway.

use reqwest::{Method, StatusCode};
use saga_proto::order::{CreateOrderRequest, OrderItem, violations_of};
use saga_tests::http::{Api, PrivateGateway};
use saga_tests::stack;
use serde_json::{Value, json};

/// Who sends a case.
#[derive(Debug, Clone, Copy)]
enum As {
    Anonymous,
    Customer,
    Admin,
}

struct Case {
    name: &'static str,
    who: As,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    /// Sent as-is with `Content-Type: application/json` unless `content_type` says otherwise.
    body: Option<String>,
    content_type: &'static str,
    status: u16,
    code: &'static str,
    /// Expected `fields` as (field, message); empty means the body has none.
    fields: Vec<(&'static str, &'static str)>,
    /// Expected `message` when it is not the generic validation one.
    message: Option<&'static str>,
}

fn case(name: &'static str, who: As, method: Method, path: &str, body: Option<Value>) -> Case {
    Case {
        name,
        who,
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: body.map(|b| b.to_string()),
        content_type: "application/json",
        status: 400,
        code: "validation_failed",
        fields: Vec::new(),
        message: None,
    }
}

impl Case {
    fn fields(mut self, fields: &[(&'static str, &'static str)]) -> Case {
        self.fields = fields.to_vec();
        self
    }
    fn error(mut self, status: u16, code: &'static str, message: &'static str) -> Case {
        self.status = status;
        self.code = code;
        self.message = Some(message);
        self
    }
    fn raw(mut self, body: String, content_type: &'static str) -> Case {
        self.body = Some(body);
        self.content_type = content_type;
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.push((name, value.to_owned()));
        self
    }
}

async fn run(api: &Api, cases: Vec<Case>, customer: Option<&str>, admin: Option<&str>) {
    let mut failures = Vec::new();
    for case in cases {
        let token = match case.who {
            As::Anonymous => None,
            As::Customer => customer,
            As::Admin => admin,
        };
        let mut request = api.http.request(case.method.clone(), api.url(&case.path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &case.body {
            request = request.header("content-type", case.content_type).body(body.clone());
        }
        let response = request.send().await.expect("request");
        if response.headers().get("x-request-id").is_none() {
            failures.push(format!("{}: no X-Request-Id in the response", case.name));
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let fields: Vec<(String, String)> = body["fields"]
            .as_array()
            .map(|fields| {
                fields
                    .iter()
                    .map(|f| {
                        (f["field"].as_str().unwrap_or("?").to_owned(), f["message"].as_str().unwrap_or("?").to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let expected_fields: Vec<(String, String)> =
            case.fields.iter().map(|(f, m)| ((*f).to_owned(), (*m).to_owned())).collect();
        let expected_message = case.message.unwrap_or("the request is invalid");
        if status != StatusCode::from_u16(case.status).expect("status")
            || body["code"] != case.code
            || body["message"] != expected_message
            || fields != expected_fields
        {
            failures.push(format!(
                "{}: expected {} {} {:?} {:?}, got {} {}",
                case.name, case.status, case.code, expected_message, case.fields, status, body
            ));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn invalid_anonymous_inputs_give_exact_errors() {
    let api = Api::of_stack(&stack());
    let register = "/api/v1/auth/register";
    let good_password = "long enough password";
    let cases = vec![
        case(
            "short password",
            As::Anonymous,
            Method::POST,
            register,
            Some(json!({"email": "a@b.co", "password": "short"})),
        )
        .fields(&[("password", "must be at least 8 characters")]),
        case(
            "bad email",
            As::Anonymous,
            Method::POST,
            register,
            Some(json!({"email": "nope", "password": good_password})),
        )
        .fields(&[("email", "must be an email address")]),
        case("two bad fields", As::Anonymous, Method::POST, register, Some(json!({"email": "", "password": ""})))
            .fields(&[("email", "must not be empty"), ("password", "must be at least 8 characters")]),
        case(
            "registration that assigns a balance",
            As::Anonymous,
            Method::POST,
            register,
            Some(json!({"email": "a@b.co", "password": good_password, "balance_minor": 1_000_000})),
        )
        .fields(&[(
            "balance_minor",
            "unknown field `balance_minor`, expected one of `email`, `password`, `display_name`",
        )]),
        case(
            "unknown field",
            As::Anonymous,
            Method::POST,
            register,
            Some(json!({"email": "a@b.co", "password": good_password, "role": "admin"})),
        )
        .fields(&[("role", "unknown field `role`, expected one of `email`, `password`, `display_name`")]),
        case("missing field", As::Anonymous, Method::POST, register, Some(json!({"password": good_password})))
            .fields(&[("email", "missing field `email`")]),
        case("wrong type", As::Anonymous, Method::POST, register, Some(json!({"email": 5, "password": good_password})))
            .fields(&[("email", "invalid type: integer `5`, expected a string")]),
        case(
            "blank display name",
            As::Anonymous,
            Method::POST,
            register,
            Some(json!({"email": "a@b.co", "password": good_password, "display_name": " "})),
        )
        .fields(&[("display_name", "must not be blank")]),
        case("not JSON", As::Anonymous, Method::POST, register, None).raw("{".to_owned(), "application/json").error(
            400,
            "bad_request",
            "the body is not valid JSON: EOF while parsing an object",
        ),
        case("not a JSON content type", As::Anonymous, Method::POST, register, None)
            .raw("email=a".to_owned(), "application/x-www-form-urlencoded")
            .error(415, "unsupported_media_type", "the request body must be JSON (Content-Type: application/json)"),
        case("body over the limit", As::Anonymous, Method::POST, register, None)
            .raw(format!("{{\"email\": \"{}\"}}", "a".repeat(70_000)), "application/json")
            .error(413, "payload_too_large", "the request body is too large"),
        case(
            "empty login",
            As::Anonymous,
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"email": "", "password": ""})),
        )
        .fields(&[("email", "must not be empty"), ("password", "must not be empty")]),
        case("page size 0", As::Anonymous, Method::GET, "/api/v1/products?page_size=0", None)
            .fields(&[("page_size", "must be between 1 and 100")]),
        case("page size not a number", As::Anonymous, Method::GET, "/api/v1/products?page_size=abc", None)
            .fields(&[("page_size", "invalid digit found in string")]),
        case("unknown query parameter", As::Anonymous, Method::GET, "/api/v1/products?color=red", None)
            .fields(&[("color", "unknown field `color`, expected `page_size` or `page_token`")]),
        case("product id not a UUID", As::Anonymous, Method::GET, "/api/v1/products/42", None)
            .fields(&[("id", "must be a UUID")]),
        case("no token", As::Anonymous, Method::GET, "/api/v1/me", None).error(
            401,
            "unauthorized",
            "missing bearer token",
        ),
        case("not a bearer token", As::Anonymous, Method::GET, "/api/v1/me", None)
            .header("authorization", "Basic YTpi")
            .error(401, "unauthorized", "the Authorization header must be `Bearer <token>`"),
        case("unknown token", As::Anonymous, Method::GET, "/api/v1/me", None)
            .header("authorization", "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .error(401, "unauthorized", "invalid or expired token"),
        case("unknown route", As::Anonymous, Method::GET, "/api/v1/nothing", None).error(
            404,
            "not_found",
            "no such route",
        ),
        case("wrong method", As::Anonymous, Method::DELETE, "/api/v1/products", None).error(
            405,
            "method_not_allowed",
            "this method is not allowed here",
        ),
    ];
    run(&api, cases, None, None).await;
}

#[tokio::test]
async fn invalid_authenticated_inputs_give_exact_errors() {
    let api = Api::of_stack(&stack());
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 100, 1).await;
    let some_id = "00000000-0000-4000-8000-000000000000";
    let cases = vec![
        case(
            "blank name, negative price",
            As::Admin,
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": " ", "price_minor": -1})),
        )
        .fields(&[("name", "must not be blank"), ("price_minor", "must be between 0 and 1000000000000")]),
        case(
            "fractional price",
            As::Admin,
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "x", "price_minor": 1.5})),
        )
        .fields(&[("price_minor", "invalid type: floating point `1.5`, expected i64")]),
        case("empty update", As::Admin, Method::PATCH, &format!("/api/v1/products/{product}"), Some(json!({})))
            .fields(&[("body", "must set at least one of name, description, price_minor")]),
        case(
            "zero stock change",
            As::Admin,
            Method::POST,
            &format!("/api/v1/products/{product}/stock"),
            Some(json!({"delta": 0})),
        )
        .fields(&[("delta", "must not be 0")]),
        case(
            "zero credit",
            As::Admin,
            Method::POST,
            &format!("/api/v1/admin/users/{customer_id}/credit"),
            Some(json!({"amount_minor": 0})),
        )
        .fields(&[("amount_minor", "must be between 1 and 1000000000000")]),
        case(
            "no idempotency key",
            As::Customer,
            Method::POST,
            "/api/v1/orders",
            Some(json!({"items": [{"product_id": product, "quantity": 1}]})),
        )
        .fields(&[("Idempotency-Key", "is required")]),
        case("no items", As::Customer, Method::POST, "/api/v1/orders", Some(json!({"items": []})))
            .header("idempotency-key", "k1")
            .fields(&[("items", "must contain at least one item")]),
        case(
            "bad item",
            As::Customer,
            Method::POST,
            "/api/v1/orders",
            Some(json!({"items": [{"product_id": "x", "quantity": 0}]})),
        )
        .header("idempotency-key", "k2")
        .fields(&[("items[0].product_id", "must be a UUID"), ("items[0].quantity", "must be between 1 and 10000")]),
        case(
            "item with an unknown field",
            As::Customer,
            Method::POST,
            "/api/v1/orders",
            Some(json!({"items": [{"product_id": product, "quantity": 1, "price_minor": 1}]})),
        )
        .header("idempotency-key", "k3")
        .fields(&[("items[0].price_minor", "unknown field `price_minor`, expected `product_id` or `quantity`")]),
        case("order id not a UUID", As::Customer, Method::GET, "/api/v1/orders/abc", None)
            .fields(&[("id", "must be a UUID")]),
        case(
            "negative quantity",
            As::Customer,
            Method::POST,
            "/api/v1/orders",
            Some(json!({"items": [{"product_id": product, "quantity": -3}]})),
        )
        .header("idempotency-key", "k4")
        .fields(&[("items[0].quantity", "must be between 1 and 10000")]),
        case(
            "quantity past 32 bits",
            As::Customer,
            Method::POST,
            "/api/v1/orders",
            Some(json!({"items": [{"product_id": product, "quantity": 4_294_967_297_i64}]})),
        )
        .header("idempotency-key", "k5")
        .fields(&[("items[0].quantity", "invalid value: integer `4294967297`, expected i32")]),
        case(
            "credit past 64 bits",
            As::Admin,
            Method::POST,
            &format!("/api/v1/admin/users/{customer_id}/credit"),
            None,
        )
        .raw("{\"amount_minor\": 18446744073709551616}".to_owned(), "application/json")
        .fields(&[("amount_minor", "invalid type: floating point `1.8446744073709552e+19`, expected i64")]),
        case(
            "credit reference with a NUL",
            As::Admin,
            Method::POST,
            &format!("/api/v1/admin/users/{customer_id}/credit"),
            Some(json!({"amount_minor": 1, "reference": "pay\u{0}ment"})),
        )
        .fields(&[("reference", "must not contain control characters")]),
        case(
            "stock reference of 201 characters",
            As::Admin,
            Method::POST,
            &format!("/api/v1/products/{product}/stock"),
            Some(json!({"delta": 1, "reference": "é".repeat(201)})),
        )
        .fields(&[("reference", "must be 1 to 200 characters")]),
        case(
            "credit that assigns a balance",
            As::Admin,
            Method::POST,
            &format!("/api/v1/admin/users/{customer_id}/credit"),
            Some(json!({"amount_minor": 1, "balance_minor": 1_000_000})),
        )
        .fields(&[("balance_minor", "unknown field `balance_minor`, expected `amount_minor` or `reference`")]),
        case(
            "stock change that sets what is available",
            As::Admin,
            Method::POST,
            &format!("/api/v1/products/{product}/stock"),
            Some(json!({"delta": 1, "stock_available": 1_000_000})),
        )
        .fields(&[("stock_available", "unknown field `stock_available`, expected `delta` or `reference`")]),
        case(
            "customer creates a product",
            As::Customer,
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "x", "price_minor": 1})),
        )
        .error(403, "forbidden", "this needs the admin role"),
        case(
            "credit of an unknown user",
            As::Admin,
            Method::POST,
            &format!("/api/v1/admin/users/{some_id}/credit"),
            Some(json!({"amount_minor": 1})),
        )
        .error(404, "not_found", "IGNORED"),
    ];
    // The backend's not-found message is its own; check status and code only for that one.
    let (exact, loose): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(|c| c.message != Some("IGNORED"));
    run(&api, exact, Some(&customer), Some(&admin)).await;
    for case in loose {
        let reply = api
            .post(
                &case.path,
                Some(&admin),
                &serde_json::from_str(case.body.as_deref().unwrap_or("null")).expect("json"),
            )
            .await;
        assert_eq!(reply.status.as_u16(), case.status, "{}: {:?}", case.name, reply.body);
        assert_eq!(reply.body["code"], case.code, "{}", case.name);
    }
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let stack = stack();
    let gateway = PrivateGateway::start(&stack, &[("CORS_ALLOWED_ORIGINS", "https://shop.example")]).await;
    let preflight = |origin: &'static str| {
        gateway
            .api
            .http
            .request(Method::OPTIONS, gateway.api.url("/api/v1/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type,idempotency-key")
            .send()
    };
    let allowed = preflight("https://shop.example").await.expect("preflight");
    assert_eq!(
        allowed.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://shop.example")
    );
    let allowed_headers = allowed.headers().get("access-control-allow-headers").and_then(|v| v.to_str().ok());
    assert!(allowed_headers.is_some_and(|h| h.contains("idempotency-key")), "{allowed_headers:?}");
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The stack's gateway has no CORS configured: no CORS headers at all.
    let api = Api::of_stack(&stack);
    let plain = api.http.get(api.url("/api/v1/products")).header("origin", "https://shop.example").send().await;
    assert!(plain.expect("get").headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn oversized_headers_are_refused_and_the_gateway_serves_on() {
    let api = Api::of_stack(&stack());
    let over = "a".repeat(32 * 1024);
    let response =
        api.http.get(api.url("/api/v1/products")).header("x-filler", over.as_str()).send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let body: Value = response.json().await.expect("the error body");
    assert_eq!(body["code"], "headers_too_large", "{body}");
    // Under the limit, the same request is served.
    let under = "a".repeat(8 * 1024);
    let response =
        api.http.get(api.url("/api/v1/products")).header("x-filler", under.as_str()).send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
}

/// The rules of an order are the order service's: every order the gateway
/// refuses, the service refuses too when called directly (as the gateway
/// calls it), naming the same fields with the same messages; and what one
/// accepts at the limits the other accepts.
#[tokio::test]
async fn the_order_service_refuses_every_order_the_gateway_refuses_with_the_same_fields() {
    let stack = stack();
    let api = Api::of_stack(&stack);
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 100, 1).await;
    let other = api.create_product(&admin, 100, 1).await;
    let mut clients = saga_tests::saga::Clients::of_stack(&stack).await;
    let item = |product_id: &str, quantity: i64| json!({"product_id": product_id, "quantity": quantity});
    let many: Vec<Value> = (0..101).map(|n| item(&format!("00000000-0000-4000-8000-{n:012}"), 1)).collect();
    let long_key = "k".repeat(201);
    // (case, items, Idempotency-Key)
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no items", json!([]), "ok-key"),
        ("101 items", Value::Array(many), "ok-key"),
        ("quantity 0", json!([item(&product, 0)]), "ok-key"),
        ("quantity 10001", json!([item(&product, 10_001)]), "ok-key"),
        ("negative quantity", json!([item(&product, -3)]), "ok-key"),
        ("not a UUID", json!([item("x", 1)]), "ok-key"),
        ("listed twice", json!([item(&product, 1), item(&product.to_uppercase(), 2)]), "ok-key"),
        ("several at once", json!([item("x", 0), item(&product, 1), item(&product, 10_001)]), "ok-key"),
        ("key with a space", json!([item(&product, 1)]), "a key"),
        ("key of 201 characters", json!([item(&product, 1)]), &long_key),
    ];
    let mut failures = Vec::new();
    for (name, items, key) in cases {
        let response = api
            .http
            .post(api.url("/api/v1/orders"))
            .bearer_auth(&customer)
            .header("idempotency-key", key)
            .json(&json!({ "items": items }))
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let gateway: Vec<(String, String)> = body["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| (f["field"].as_str().unwrap_or("?").to_owned(), f["message"].as_str().unwrap_or("?").to_owned()))
            .map(|(field, message)| {
                (if field == "Idempotency-Key" { "idempotency_key".to_owned() } else { field }, message)
            })
            .collect();
        let request = CreateOrderRequest {
            user_id: customer_id.clone(),
            items: items
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| OrderItem {
                    product_id: i["product_id"].as_str().unwrap_or_default().to_lowercase(),
                    quantity: i["quantity"].as_i64().unwrap_or_default() as i32,
                })
                .collect(),
            idempotency_key: key.to_owned(),
        };
        let service: Vec<(String, String)> = match clients.order.create_order(request).await {
            Ok(_) => Vec::new(),
            Err(refusal) => match violations_of(&refusal) {
                Some(violations) => violations.into_iter().map(|v| (v.field, v.message)).collect(),
                None => vec![("(not a refusal of the rules)".to_owned(), refusal.to_string())],
            },
        };
        if status != StatusCode::BAD_REQUEST || gateway.is_empty() || gateway != service {
            failures.push(format!("{name}: the gateway answered {status} {gateway:?}, the order service {service:?}"));
        }
    }
    // At the limits the gateway accepts (10000 units, a key of 200
    // characters), and so does the service it passes the order to.
    let at_limits = vec![item(&product, 10_000), item(&other, 10_000)];
    let response = api
        .http
        .post(api.url("/api/v1/orders"))
        .bearer_auth(&customer)
        .header("idempotency-key", "l".repeat(200))
        .json(&json!({ "items": at_limits }))
        .send()
        .await
        .expect("request");
    if response.status() != StatusCode::CREATED {
        failures.push(format!("at the limits: the gateway answered {}", response.status()));
    }
    assert!(failures.is_empty(), "the gateway and the order service disagree:\n{}", failures.join("\n"));
}
