//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use saga_proto::order::order_service_client::OrderServiceClient;
use saga_proto::product::product_service_client::ProductServiceClient;
use saga_proto::user::user_service_client::UserServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::config::Config;
use crate::rate_limit::LoginLimiter;
use crate::session::SessionStore;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub redis: redis::Client,
    pub sessions: SessionStore,
    pub login_limiter: LoginLimiter,
    pub backends: Backends,
    /// Set once the configured admin account is known to exist; `/readyz` waits for it.
    pub admin_ready: Arc<AtomicBool>,
    /// Whether new orders are accepted now.
    pub admission: crate::admission::Admission,
    /// The operator console's HTTP client and base URL.
    pub console: reqwest::Client,
    pub console_url: reqwest::Url,
}

/// gRPC clients of the three services. Clones share one HTTP/2 connection each.
#[derive(Clone)]
pub struct Backends {
    pub channels: Vec<(&'static str, Channel)>,
    pub order: OrderServiceClient<Channel>,
    pub product: ProductServiceClient<Channel>,
    pub user: UserServiceClient<Channel>,
    pub timeout: Duration,
}

tokio::task_local! {
    /// The W3C `traceparent` of the HTTP request being handled (the client's,
    /// or one minted by the gateway), set by `app::trace_context`.
    pub static TRACEPARENT: String;
}

impl Backends {
    /// A request with the gateway's deadline (tonic sends it as `grpc-timeout`
    /// and fails the call with DEADLINE_EXCEEDED when it passes) and the HTTP
    /// request's trace context, so the saga it starts carries the same trace.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        if let Ok(Ok(traceparent)) = TRACEPARENT.try_with(|tp| tp.parse::<MetadataValue<_>>()) {
            request.metadata_mut().insert(saga_process::trace::TRACEPARENT, traceparent);
        }
        request
    }
}
