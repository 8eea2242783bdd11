//! The gateway documents itself: an OpenAPI 3 document generated from the
//! code and an interactive docs page that needs nothing from the internet.

use reqwest::StatusCode;
use saga_tests::http::Api;
use saga_tests::stack;

#[tokio::test]
async fn openapi_document_and_docs_page_are_served() {
    let api = Api::of_stack(&stack());
    let doc = api.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc.body["openapi"]);
    let paths = doc.body["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/products", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}", "patch"),
        ("/api/v1/products/{id}/stock", "post"),
        ("/api/v1/orders", "post"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/events", "get"),
        ("/api/v1/admin/users/{id}/credit", "post"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
    }
    assert!(doc.body["components"]["schemas"]["ErrorBody"].is_object());

    let page = api.http.get(api.url("/docs")).send().await.expect("docs");
    assert_eq!(page.status(), StatusCode::OK);
    let content_type = page.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = page.text().await.expect("html");
    assert!(html.contains("/openapi.json"));
    // Offline: no script or stylesheet from another host.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "the docs page loads from the network");
}
