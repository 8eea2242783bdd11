//! The OpenAPI 3 document, generated from the handlers' annotations, and an
//! interactive docs page that needs no CDN (it is one self-contained page
//! that reads `/openapi.json`).

use axum::Json;
use axum::response::Html;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, FieldError};
use crate::routes::{admin, auth, console, orders, products};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Saga platform API",
        description = "REST API of the order-processing saga. Errors always have the body `ErrorBody`. \
Authenticate with `POST /api/v1/auth/login` and send `Authorization: Bearer <token>`.",
    ),
    paths(
        auth::register, auth::login, auth::logout, auth::me,
        products::list, products::get, products::create, products::update, products::adjust_stock,
        orders::create, orders::get, orders::list, orders::events,
        admin::credit,
        console::overview, console::overview_stream, console::saga, console::saga_stream,
        console::dead_letters, console::redrive, console::audit,
    ),
    components(schemas(ErrorBody, FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "products", description = "The catalogue; writes need the admin role"),
        (name = "orders", description = "Orders and their sagas; a user sees only their own"),
        (name = "admin", description = "Admin operations"),
        (name = "console", description = "The operator console's API (admins only); the page itself is `GET /console`"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Links from what an operation creates to the operations that take its id,
/// so that a client (and schemathesis's stateful phase) can follow them:
/// a registered user to their credit, a product to its reads and writes, an
/// order to its reads, its event stream and its saga in the console.
///
/// A link: its name, the linked operation's path and method.
type Link = (&'static str, &'static str, &'static str);

/// (the creating operation's path, its links).
const LINKS: [(&str, &[Link]); 3] = [
    ("/api/v1/auth/register", &[("CreditUser", "/api/v1/admin/users/{id}/credit", "post")]),
    (
        "/api/v1/products",
        &[
            ("GetProduct", "/api/v1/products/{id}", "get"),
            ("UpdateProduct", "/api/v1/products/{id}", "patch"),
            ("AdjustStock", "/api/v1/products/{id}/stock", "post"),
        ],
    ),
    (
        "/api/v1/orders",
        &[
            ("GetOrder", "/api/v1/orders/{id}", "get"),
            ("OrderEvents", "/api/v1/orders/{id}/events", "get"),
            ("OrderSaga", "/api/v1/admin/console/sagas/{id}", "get"),
            ("OrderSagaStream", "/api/v1/admin/console/sagas/{id}/stream", "get"),
        ],
    ),
];

/// The document as served: utoipa's, with an order's statuses enumerated from
/// the saga spec and [`LINKS`] added to the 201 responses. Added to the JSON,
/// not through utoipa's `Link`, which serializes `operationRef` as
/// `operation_ref` (utoipa 5.5).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(status) = doc.pointer_mut("/components/schemas/Order/properties/status") {
        let statuses: Vec<&str> = saga_generated::OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        status["enum"] = serde_json::json!(statuses);
    }
    for (creator, linked) in LINKS {
        let Some(created) = doc.pointer_mut(&format!("/paths/{}/post/responses/201", pointer_segment(creator))) else {
            continue;
        };
        let links: serde_json::Map<String, serde_json::Value> = linked
            .iter()
            .map(|(name, path, method)| {
                let reference = format!("#/paths/{}/{method}", pointer_segment(path));
                let link =
                    serde_json::json!({ "operationRef": reference, "parameters": { "id": "$response.body#/id" } });
                ((*name).to_owned(), link)
            })
            .collect();
        created["links"] = serde_json::Value::Object(links);
    }
    doc
}

/// `path` as one segment of a JSON Pointer (`~` is `~0`, `/` is `~1`).
fn pointer_segment(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}

pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(document())
}

pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orders_status_is_one_of_the_specs() {
        let doc = document();
        let statuses = &doc["components"]["schemas"]["Order"]["properties"]["status"]["enum"];
        let expected: Vec<&str> = saga_generated::OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(statuses, &serde_json::json!(expected));
        assert!(expected.contains(&"paid") && expected.contains(&"shipping_failed"), "{expected:?}");
    }

    #[test]
    fn document_lists_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/api/v1/auth/register",
            "/api/v1/auth/login",
            "/api/v1/auth/logout",
            "/api/v1/me",
            "/api/v1/products",
            "/api/v1/products/{id}",
            "/api/v1/products/{id}/stock",
            "/api/v1/orders",
            "/api/v1/orders/{id}",
            "/api/v1/orders/{id}/events",
            "/api/v1/admin/users/{id}/credit",
            "/api/v1/admin/console/overview",
            "/api/v1/admin/console/overview/stream",
            "/api/v1/admin/console/sagas/{id}",
            "/api/v1/admin/console/sagas/{id}/stream",
            "/api/v1/admin/console/dlq",
            "/api/v1/admin/console/dlq/redrive",
            "/api/v1/admin/console/dlq/audit",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn every_link_points_at_an_operation_of_the_document() {
        let doc = document();
        let mut links = 0;
        for (creator, linked) in LINKS {
            let created = &doc["paths"][creator]["post"]["responses"]["201"]["links"];
            for (name, path, method) in linked {
                let link = &created[name];
                let reference = link["operationRef"].as_str().unwrap_or_else(|| panic!("{creator} -> {name}: {link}"));
                assert!(doc.pointer(reference.trim_start_matches('#')).is_some(), "{reference} resolves");
                assert!(
                    doc["paths"][path][method]["parameters"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p["name"] == "id" && p["in"] == "path"))
                );
                links += 1;
            }
        }
        assert_eq!(links, 8);
    }

    /// The document states the order service's rules, not figures of its own.
    #[test]
    fn the_documented_limits_of_an_order_are_the_order_services_rules() {
        use saga_proto::order::rules::{MAX_ITEMS, MAX_KEY_LEN, MAX_QUANTITY};
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["CreateOrder"]["properties"]["items"]["maxItems"], MAX_ITEMS);
        assert_eq!(schemas["OrderItem"]["properties"]["quantity"]["maximum"], MAX_QUANTITY);
        let key = doc["paths"]["/api/v1/orders"]["post"]["parameters"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "Idempotency-Key"))
            .expect("the Idempotency-Key header")
            .clone();
        assert_eq!(key["schema"]["pattern"], format!("^[!-~]{{1,{MAX_KEY_LEN}}}$"));
    }
}
