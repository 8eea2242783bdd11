//! gRPC API of the order service.

use chrono::{DateTime, Utc};
use saga_generated::TraceContext;
use saga_generated::commands::{CreateOrder, run_create_order};
use saga_generated::types::OrderItem as SagaItem;
use saga_proto::order::order_service_server::OrderService;
use saga_proto::order::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, GetSagaBacklogRequest, ListOrdersRequest,
    ListOrdersResponse, Order, OrderItem, SagaBacklog, StatusChange, WatchOrdersRequest,
};
use saga_runtime::db::{self, PoolName};
use saga_runtime::grpc::{database, internal, is_constraint, page_size, parse_uuid, timestamp};
use sqlx::{FromRow, PgConnection, PgPool};
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

const MAX_ITEMS: usize = 100;

#[derive(FromRow)]
struct OrderRow {
    order_id: Uuid,
    user_id: Uuid,
    status: String,
    total_minor: Option<i64>,
    failure_reason: Option<String>,
    idempotency_key: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Items in line order, as two parallel arrays.
    item_products: Vec<Uuid>,
    item_quantities: Vec<i32>,
    /// JSON array of [`HistoryRow`], oldest first; NULL when not asked for.
    history: Option<String>,
}

/// A row of `order_status_history` as JSON (`GetOrder`'s read).
#[derive(serde::Deserialize)]
struct HistoryRow {
    from_status: Option<String>,
    to_status: String,
    event_id: Uuid,
    event_type: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

/// An order with its items and, when `$2` is true, its history: one round
/// trip (it was three, and a list page made one more per order).
const SELECT: &str = "SELECT o.order_id, o.user_id, o.status, o.total_minor, o.failure_reason, o.idempotency_key, \
                      o.created_at, o.updated_at, \
                      ARRAY(SELECT i.product_id FROM order_items i WHERE i.order_id = o.order_id ORDER BY i.line_no) \
                        AS item_products, \
                      ARRAY(SELECT i.quantity FROM order_items i WHERE i.order_id = o.order_id ORDER BY i.line_no) \
                        AS item_quantities, \
                      CASE WHEN $2 THEN (SELECT coalesce(json_agg(json_build_object('from_status', h.from_status, \
                        'to_status', h.to_status, 'event_id', h.event_id, 'event_type', h.event_type, \
                        'reason', h.reason, 'at', h.at) ORDER BY h.id), '[]')::text \
                        FROM order_status_history h WHERE h.order_id = o.order_id) END AS history \
                      FROM orders o";

async fn load(conn: &mut PgConnection, order_id: Uuid, with_history: bool) -> Result<Option<Order>, Status> {
    let row = sqlx::query_as::<_, OrderRow>(&format!("{SELECT} WHERE o.order_id = $1"))
        .bind(order_id)
        .bind(with_history)
        .fetch_optional(conn)
        .await
        .map_err(database)?;
    row.map(to_proto).transpose()
}

fn to_proto(r: OrderRow) -> Result<Order, Status> {
    let history: Vec<HistoryRow> = match &r.history {
        Some(json) => serde_json::from_str(json).map_err(internal)?,
        None => Vec::new(),
    };
    Ok(Order {
        order_id: r.order_id.to_string(),
        user_id: r.user_id.to_string(),
        status: r.status,
        items: r
            .item_products
            .iter()
            .zip(&r.item_quantities)
            .map(|(p, &quantity)| OrderItem { product_id: p.to_string(), quantity })
            .collect(),
        total_minor: r.total_minor,
        failure_reason: r.failure_reason.unwrap_or_default(),
        idempotency_key: r.idempotency_key,
        created_at: timestamp(r.created_at),
        updated_at: timestamp(r.updated_at),
        history: history.into_iter().map(StatusChange::from).collect(),
    })
}

impl From<HistoryRow> for StatusChange {
    fn from(h: HistoryRow) -> StatusChange {
        StatusChange {
            from_status: h.from_status.unwrap_or_default(),
            to_status: h.to_status,
            event_id: h.event_id.to_string(),
            event_type: h.event_type,
            reason: h.reason.unwrap_or_default(),
            at: timestamp(h.at),
        }
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
    let found: Option<(Uuid, String)> =
        sqlx::query_as("SELECT order_id, request_hash FROM orders WHERE user_id = $1 AND idempotency_key = $2")
            .bind(user_id)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(database)?;
    let Some((order_id, stored)) = found else { return Ok(None) };
    if stored != fp {
        return Err(Status::already_exists("idempotency_key was already used for a different order"));
    }
    load(conn, order_id, true).await
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
        if r.idempotency_key.is_empty() || r.idempotency_key.len() > 200 {
            return Err(Status::invalid_argument("idempotency_key is required (1..=200 characters)"));
        }
        if r.items.is_empty() || r.items.len() > MAX_ITEMS {
            return Err(Status::invalid_argument(format!("an order has 1..={MAX_ITEMS} items")));
        }
        let mut items = Vec::with_capacity(r.items.len());
        for item in &r.items {
            if item.quantity < 1 {
                return Err(Status::invalid_argument("quantity must be at least 1"));
            }
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
        let order = load(&mut ctx.tx, order_id, true).await?;
        ctx.tx.commit().await.map_err(database)?;
        after_commit.run();
        tracing::info!(%order_id, %user_id, "order created; saga started");
        Ok(Response::new(CreateOrderResponse { order, created: true }))
    }

    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        let order_id = parse_uuid("order_id", &request.into_inner().order_id)?;
        let mut conn = db::acquire(&self.pool, PoolName::Api).await.map_err(database)?;
        let order = load(&mut conn, order_id, true).await?;
        order.map(Response::new).ok_or_else(|| Status::not_found(format!("no order {order_id}")))
    }

    async fn list_orders(&self, request: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let r = request.into_inner();
        let user_id = parse_uuid("user_id", &r.user_id)?;
        let limit = page_size(r.page_size, 20, 100)?;
        // Order ids are UUIDv7 (time-ordered), so keyset paging on the id
        // descending lists newest first and is stable under inserts.
        let before = if r.page_token.is_empty() { Uuid::max() } else { parse_uuid("page_token", &r.page_token)? };
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "{SELECT} WHERE o.user_id = $1 AND o.order_id < $3 ORDER BY o.order_id DESC LIMIT $4"
        ))
        .bind(user_id)
        .bind(false)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&mut *db::acquire(&self.pool, PoolName::Api).await.map_err(database)?)
        .await
        .map_err(database)?;
        let more = rows.len() as i64 > limit;
        let orders = rows.into_iter().take(limit as usize).map(to_proto).collect::<Result<Vec<_>, _>>()?;
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
        let (running, at_risk): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE $2 > updated_at + (deadline_at - updated_at) * $1) \
             FROM orders WHERE deadline_at IS NOT NULL",
        )
        .bind(f64::from(percent) / 100.0)
        .bind(chrono::DateTime::<chrono::Utc>::from(as_of))
        .fetch_one(&mut *db::acquire(&self.pool, PoolName::Api).await.map_err(database)?)
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
