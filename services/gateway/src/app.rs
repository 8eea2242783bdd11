//! The router: routes, fallbacks and the middleware every request passes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request as AxumRequest;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use saga_proto::order::order_service_client::OrderServiceClient;
use saga_proto::product::product_service_client::ProductServiceClient;
use saga_proto::user::user_service_client::UserServiceClient;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::balance::Instances;
use crate::config::Config;
use crate::error::ApiError;
use crate::rate_limit::{LoginLimiter, LoginLimits, RegistrationLimiter, RegistrationLimits};
use crate::routes::{admin, auth, console, health, orders, products};
use crate::session::SessionStore;
use crate::state::{AppState, Backends};

/// Connects (lazily, so a backend that is down only fails its requests) and builds the state.
pub async fn state(config: Config, shutdown: saga_process::shutdown::Shutdown) -> anyhow::Result<AppState> {
    let redis = redis::Client::open(config.redis_url.as_str()).context("invalid REDIS_URL")?;
    let manager = redis::aio::ConnectionManager::new(redis.clone())
        .await
        .with_context(|| format!("cannot connect to Redis at {}", saga_process::redact::url(&config.redis_url)))?;
    // Each service's instances (a comma-separated list of URLs), balanced over those that answer.
    let tls = config.grpc_tls()?;
    let order = Instances::start("order", &config.order_grpc_url, tls.as_ref())?;
    let product = Instances::start("product", &config.product_grpc_url, tls.as_ref())?;
    let user = Instances::start("user", &config.user_grpc_url, tls.as_ref())?;
    let backends = Backends {
        order: OrderServiceClient::new(order.channel.clone()),
        product: ProductServiceClient::new(product.channel.clone()),
        user: UserServiceClient::new(user.channel.clone()),
        instances: vec![order, product, user],
        timeout: config.grpc_timeout(),
    };
    let login_limits = LoginLimits {
        per_account_ip: config.login_limit_per_account_ip,
        per_ip: config.login_limit_per_ip,
        per_account: config.login_limit_per_account,
        window: Duration::from_secs(config.login_limit_window_secs),
        success_per_account: config.login_success_limit_per_account,
        success_per_ip: config.login_success_limit_per_ip,
    };
    let registration_limits = RegistrationLimits {
        per_ip: config.register_limit_per_ip,
        total: config.register_limit_total,
        window: Duration::from_secs(config.register_limit_window_secs),
    };
    let console_url = reqwest::Url::parse(&config.console_url)
        .with_context(|| format!("invalid CONSOLE_URL: {}", config.console_url))?;
    let console = console_client(&console_url, tls.as_ref())?;
    Ok(AppState {
        shutdown,
        console,
        console_url,
        sessions: SessionStore::new(
            manager.clone(),
            &config.redis_key_prefix,
            config.session_ttl(),
            Duration::from_millis(config.session_check_ms),
            config.sessions_per_user,
        ),
        login_limiter: LoginLimiter::new(manager.clone(), &config.redis_key_prefix, login_limits),
        registration_limiter: RegistrationLimiter::new(manager, &config.redis_key_prefix, registration_limits),
        redis,
        backends,
        admin_account: crate::admin_account::AdminAccount::default(),
        admission: crate::admission::Admission::new(&config),
        order_feed: crate::order_feed::OrderFeed::default(),
        config: Arc::new(config),
    })
}

/// The console's HTTP client. With the gateway's TLS files, the console is reached over
/// mutual TLS: the gateway presents its own certificate (the console answers no one else)
/// and accepts only a server whose certificate the authority issued for `console`, whatever
/// address it dialled. Without them, plain HTTP, which a console without TLS answers only
/// with its page (never its API). As for the services, an `https://` URL without TLS files,
/// or an `http://` one with them, is refused.
fn console_client(url: &reqwest::Url, tls: Option<&saga_proto::tls::TlsFiles>) -> anyhow::Result<reqwest::Client> {
    // No overall timeout: the console's live views are streams that stay open.
    let builder = reqwest::Client::builder().connect_timeout(health::PROBE_TIMEOUT);
    let builder = match (url.scheme(), tls) {
        ("https", Some(files)) => builder.use_preconfigured_tls(
            files
                .https_client(saga_proto::tls::CONSOLE)
                .context("the console's TLS (GRPC_TLS_CA, GRPC_TLS_CERT, GRPC_TLS_KEY)")?,
        ),
        ("http", None) => builder,
        ("https", None) => anyhow::bail!(
            "CONSOLE_URL {url} is https, but the gateway has no GRPC_TLS_CA, GRPC_TLS_CERT and GRPC_TLS_KEY"
        ),
        ("http", Some(_)) => anyhow::bail!(
            "CONSOLE_URL {url} is plaintext http, but the gateway is configured for mutual TLS; use https://"
        ),
        (scheme, _) => anyhow::bail!("CONSOLE_URL {url}: {scheme} is neither http nor https"),
    };
    builder.build().context("HTTP client for the console")
}

pub fn router(state: AppState) -> anyhow::Result<Router> {
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/me", get(auth::me))
        .route("/products", get(products::list).post(products::create))
        .route("/products/{id}", get(products::get).patch(products::update))
        .route("/products/{id}/stock", post(products::adjust_stock))
        .route("/orders", get(orders::list).post(orders::create))
        .route("/orders/{id}", get(orders::get))
        .route("/orders/{id}/events", get(orders::events))
        .route("/admin/users/{id}/credit", post(admin::credit))
        .route("/admin/console/overview", get(console::overview))
        .route("/admin/console/overview/stream", get(console::overview_stream))
        .route("/admin/console/sagas/{id}", get(console::saga))
        .route("/admin/console/sagas/{id}/stream", get(console::saga_stream))
        .route("/admin/console/dlq", get(console::dead_letters))
        .route("/admin/console/dlq/redrive", post(console::redrive))
        .route("/admin/console/dlq/audit", get(console::audit));
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
        // No query string or headers: they may carry tokens or personal data.
        tracing::info_span!("request", method = %request.method(), path = %request.uri().path(),
            request_id = tracing::field::Empty, trace_id = tracing::field::Empty, user_id = tracing::field::Empty)
    });
    let mut app = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/docs", get(crate::openapi::docs))
        .route("/console", get(console::page))
        .route("/console/assets/{name}", get(console::asset))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(middleware::from_fn_with_state(state.config.header_limit_bytes, header_limit))
        .layer(middleware::from_fn(saga_process::http::request_metrics))
        .layer(middleware::from_fn(trace_context))
        .layer(middleware::from_fn(request_id))
        .layer(trace);
    if let Some(cors) = cors(&state.config.cors_allowed_origins)? {
        app = app.layer(cors);
    }
    Ok(app.with_state(state))
}

const REQUEST_ID: &str = "x-request-id";

/// Tags each request with an id (the client's `X-Request-Id` when it is sane,
/// else a fresh UUID), records it in the request's span and echoes it in the
/// response: the key from an opaque 5xx body to the log lines of its cause.
/// 431 for a request whose headers (names and values) add up to more than
/// `limit` bytes, before any handler or extractor reads them. hyper alone
/// accepts some 400 KiB of headers per request.
async fn header_limit(
    axum::extract::State(limit): axum::extract::State<usize>,
    request: AxumRequest,
    next: Next,
) -> Response {
    let size: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if size > limit {
        return axum::response::IntoResponse::into_response(ApiError::HeadersTooLarge);
    }
    next.run(request).await
}

async fn request_id(request: AxumRequest, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    tracing::Span::current().record("request_id", id.as_str());
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Takes the client's W3C `traceparent` when it is well formed, else mints
/// one, records its trace id in the request's span, and makes it the trace
/// context of every gRPC call the handler makes (`Backends::request`): an
/// order's saga events then carry the trace its HTTP request started.
async fn trace_context(request: AxumRequest, next: Next) -> Response {
    use saga_process::trace;
    let incoming =
        request.headers().get(trace::TRACEPARENT).and_then(|v| v.to_str().ok()).filter(|v| trace::is_valid(v));
    let span = tracing::Span::current();
    if let Some(parent) = incoming {
        saga_process::telemetry::set_parent(&span, parent);
    }
    // With traces exported, the calls the request makes are children of its span.
    let traceparent = saga_process::telemetry::traceparent_of(&span)
        .or_else(|| incoming.map(str::to_owned))
        .unwrap_or_else(trace::new_traceparent);
    span.record("trace_id", trace::trace_id(&traceparent).unwrap_or_default());
    crate::state::TRACEPARENT.scope(traceparent, next.run(request)).await
}

/// CORS from `CORS_ALLOWED_ORIGINS`: empty = no CORS headers at all (same-origin only).
fn cors(origins: &str) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&str> = origins.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("invalid CORS origin {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(REQUEST_ID),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER, HeaderName::from_static(REQUEST_ID)])
            .max_age(Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_url_says_tls_exactly_when_the_gateway_has_its_files() {
        let files = saga_proto::tls::TlsFiles::in_folder(std::path::Path::new("/nonexistent"), "gateway");
        let url = |u: &str| reqwest::Url::parse(u).expect("a URL");
        assert!(console_client(&url("http://127.0.0.1:17081"), None).is_ok());
        let error = console_client(&url("https://console:8081"), None).expect_err("no files");
        assert!(error.to_string().contains("GRPC_TLS_CERT"), "{error}");
        let error = console_client(&url("http://console:8081"), Some(&files)).expect_err("plaintext with TLS");
        assert!(error.to_string().contains("use https://"), "{error}");
        let error = console_client(&url("https://console:8081"), Some(&files)).expect_err("files missing");
        assert!(format!("{error:#}").contains("/nonexistent/ca.pem"), "{error:#}");
        assert!(console_client(&url("ftp://console"), None).is_err());
    }
}
