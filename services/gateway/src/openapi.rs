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

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
