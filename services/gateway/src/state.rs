//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use saga_proto::order::order_service_client::OrderServiceClient;
use saga_proto::product::product_service_client::ProductServiceClient;
use saga_proto::user::user_service_client::UserServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::config::Config;
use crate::rate_limit::{LoginLimiter, RegistrationLimiter};
use crate::session::SessionStore;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub redis: redis::Client,
    pub sessions: SessionStore,
    pub login_limiter: LoginLimiter,
    pub registration_limiter: RegistrationLimiter,
    pub backends: Backends,
    /// Whether the configured admin account is known to exist and to be
    /// the admin's; `/readyz` says so.
    pub admin_account: crate::admin_account::AdminAccount,
    /// Whether new orders are accepted now.
    pub admission: crate::admission::Admission,
    /// The operator console's HTTP client and base URL.
    pub console: reqwest::Client,
    pub console_url: reqwest::Url,
    /// Order status changes as they commit, which the order event streams wait on.
    pub order_feed: crate::order_feed::OrderFeed,
    /// Requested on SIGTERM: event streams end with a `reconnect` event.
    pub shutdown: saga_process::shutdown::Shutdown,
}

/// gRPC clients of the three services, each balanced over the service's
/// instances ([`crate::balance`]). Clones share the connections.
#[derive(Clone)]
pub struct Backends {
    pub instances: Vec<crate::balance::Instances>,
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

/// `<service>_call(idempotence, message, |client, request| ...)`: one call of
/// the service with `message`, sent again on another instance when it could
/// not reach one ([`crate::balance::retry`]).
macro_rules! service_call {
    ($name:ident, $field:ident, $client:ty) => {
        pub async fn $name<M: Clone, T, Fut>(
            &self,
            idempotence: crate::balance::Idempotence,
            message: &M,
            call: impl Fn($client, tonic::Request<M>) -> Fut,
        ) -> Result<T, tonic::Status>
        where
            Fut: std::future::Future<Output = Result<T, tonic::Status>>,
        {
            let service = stringify!($field);
            let instances = self.instances.iter().find(|i| i.service == service);
            let timeout = self.timeout;
            crate::balance::retry(service, idempotence, || {
                let none_answers = instances.is_some_and(crate::balance::Instances::none_answers);
                let call = call(self.$field.clone(), self.request(message.clone()));
                async move {
                    if none_answers {
                        return Err(crate::balance::no_instance(service));
                    }
                    // The deadline holds in the balancer too, waiting for an instance.
                    match tokio::time::timeout(timeout, call).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer from {service} in time"))),
                    }
                }
            })
            .await
        }
    };
}

impl Backends {
    service_call!(order_call, order, OrderServiceClient<Channel>);
    service_call!(product_call, product, ProductServiceClient<Channel>);
    service_call!(user_call, user, UserServiceClient<Channel>);

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
