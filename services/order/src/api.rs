//! gRPC API of the order service.

use saga_generated::TraceContext;
use saga_generated::commands::{CreateOrder, run_create_order};
use saga_generated::types::OrderItem as SagaItem;
use saga_proto::order::order_service_server::OrderService;
use saga_proto::order::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, GetSagaBacklogRequest, ListOrdersRequest,
    ListOrdersResponse, Order, SagaBacklog, WatchOrdersRequest,
};
use saga_runtime::db::{self, PoolName};
use saga_runtime::grpc::{database, internal, is_constraint, page_size, parse_uuid};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::saga::{CommandTx, OrderSaga};

pub struct OrderApi {
    pub pool: PgPool,
    pub saga: OrderSaga,
    /// The sweeper's caught-up clock: the backlog judges deadlines by it.
    pub clock: saga_runtime::caught_up::CaughtUpClock,
    /// `WatchOrders` calls end when it is requested (the feed itself is the saga's).
    pub shutdown: saga_process::shutdown::Shutdown,
}

async fn load(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Order>, Status> {
    order_store::order(conn, order_id).await.map_err(read_error)
}

fn read_error(e: order_store::ReadError) -> Status {
    match e {
        order_store::ReadError::Db(e) => database(e),
        e @ order_store::ReadError::History(..) => internal(e),
    }
}

/// Canonical text of a request, to tell a retry from a reused key.
fn fingerprint(user_id: Uuid, items: &[SagaItem]) -> String {
    let mut text = user_id.to_string();
    for item in items {
        text.push_str(&format!(";{}x{}", item.product_id, item.quantity));
    }
    text
}

/// The order an idempotency key already created, on `conn`: `Ok(None)` when the key is new.
async fn existing(conn: &mut PgConnection, user_id: Uuid, key: &str, fp: &str) -> Result<Option<Order>, Status> {
    let found = order_store::existing(&mut *conn, user_id, key).await.map_err(database)?;
    let Some((order_id, stored)) = found else { return Ok(None) };
    if stored != fp {
        return Err(Status::already_exists("idempotency_key was already used for a different order"));
    }
    load(conn, order_id).await
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let traceparent = saga_runtime::grpc::traceparent_or_new(&request);
        let r = request.into_inner();
        let user_id = parse_uuid("user_id", &r.user_id)?;
        // The rules are this service's (`CreateOrderRequest::violations`); the
        // gateway maps the refusal to its error body field by field.
        let violations = r.violations();
        if !violations.is_empty() {
            return Err(CreateOrderRequest::refusal(&violations));
        }
        let mut items = Vec::with_capacity(r.items.len());
        for item in &r.items {
            items.push(SagaItem { product_id: parse_uuid("product_id", &item.product_id)?, quantity: item.quantity });
        }
        let fp = fingerprint(user_id, &items);
        // One connection for the look-up and the insert (each taken from the
        // pool costs a round trip as it goes back).
        let mut tx = db::begin(&self.pool, PoolName::Api).await.map_err(database)?;
        if let Some(order) = existing(&mut tx, user_id, &r.idempotency_key, &fp).await? {
            tx.commit().await.map_err(database)?;
            return Ok(Response::new(CreateOrderResponse { order: Some(order), created: false }));
        }
        let mut ctx = CommandTx {
            tx,
            idempotency_key: r.idempotency_key.clone(),
            fingerprint: fp.clone(),
            traceparent: traceparent.clone(),
        };
        let trace = TraceContext { traceparent: Some(traceparent), tracestate: None };
        // What the transaction asks to be done once it commits: the relay's
        // wake-up, the change feed's first change.
        let (created, after_commit) = db::AfterCommit::gather(
            run_create_order(&self.saga, &mut ctx, CreateOrder { user_id, items }, trace)
                .instrument(tracing::info_span!("create_order", %user_id)),
        )
        .await;
        let event = match created {
            Ok(event) => event,
            Err(saga_generated::commands::CommandError::Handler(crate::saga::OrderError::Db(e)))
                if is_constraint(&e, "orders_idempotency_key") =>
            {
                // A concurrent call with the same key won the race: answer with its order.
                drop(ctx);
                let mut conn = db::acquire(&self.pool, PoolName::Api).await.map_err(database)?;
                let order = existing(&mut conn, user_id, &r.idempotency_key, &fp).await?;
                return Ok(Response::new(CreateOrderResponse { order, created: false }));
            }
            Err(saga_generated::commands::CommandError::Handler(crate::saga::OrderError::Db(e))) => {
                return Err(database(e));
            }
            Err(e) => return Err(internal(e)),
        };
        let order_id = event.order_id;
        let order = load(&mut ctx.tx, order_id).await?;
        ctx.tx.commit().await.map_err(database)?;
        after_commit.run();
        tracing::info!(%order_id, %user_id, "order created; saga started");
        Ok(Response::new(CreateOrderResponse { order, created: true }))
    }

    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        let order_id = parse_uuid("order_id", &request.into_inner().order_id)?;
        let mut conn = db::acquire(&self.pool, PoolName::Api).await.map_err(database)?;
        let order = load(&mut conn, order_id).await?;
        order.map(Response::new).ok_or_else(|| Status::not_found(format!("no order {order_id}")))
    }

    async fn list_orders(&self, request: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let r = request.into_inner();
        let user_id = parse_uuid("user_id", &r.user_id)?;
        let limit = page_size(r.page_size, 20, 100)?;
        // Order ids are UUIDv7 (time-ordered), so keyset paging on the id
        // descending lists newest first and is stable under inserts.
        let before = if r.page_token.is_empty() { Uuid::max() } else { parse_uuid("page_token", &r.page_token)? };
        let mut conn = db::acquire(&self.pool, PoolName::Api).await.map_err(database)?;
        let mut orders =
            order_store::orders_of_user(&mut conn, user_id, before, limit + 1).await.map_err(read_error)?;
        let more = orders.len() as i64 > limit;
        orders.truncate(limit as usize);
        let next_page_token = match (more, orders.last()) {
            (true, Some(last)) => last.order_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListOrdersResponse { orders, next_page_token }))
    }

    async fn get_saga_backlog(&self, request: Request<GetSagaBacklogRequest>) -> Result<Response<SagaBacklog>, Status> {
        let percent = request.into_inner().at_risk_percent;
        if !(1..=100).contains(&percent) {
            return Err(Status::invalid_argument("at_risk_percent must be 1..=100"));
        }
        // A running saga has a deadline (a terminal status has none); it is at
        // risk once it spent the given share of the time between entering its
        // status (`updated_at`) and its deadline without moving on. Time as
        // the sweeper judges it: the caught-up clock stands still while Kafka
        // or this database is away, so an outage of the platform itself puts
        // no saga at risk (and does not make admission refuse orders, then
        // open to every refused client at once when it ends).
        let as_of = self.clock.now().unwrap_or_else(std::time::SystemTime::now);
        let mut conn = db::acquire(&self.pool, PoolName::Api).await.map_err(database)?;
        let (running, at_risk) =
            order_store::backlog(&mut *conn, f64::from(percent) / 100.0, chrono::DateTime::<chrono::Utc>::from(as_of))
                .await
                .map_err(database)?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(Response::new(SagaBacklog { running: count(running), at_risk: count(at_risk) }))
    }

    type WatchOrdersStream = crate::feed::ChangeStream;

    async fn watch_orders(
        &self,
        _request: Request<WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        Ok(Response::new(self.saga.feed.watch(self.shutdown.clone())))
    }
}
