//! gRPC API of the order service.

use chrono::{DateTime, Utc};
use saga_generated::commands::{CreateOrder, run_create_order};
use saga_generated::types::OrderItem as SagaItem;
use saga_generated::{OrderStatus, TraceContext};
use saga_proto::order::order_service_server::OrderService;
use saga_proto::order::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order, OrderItem,
    StatusChange,
};
use saga_runtime::grpc::{internal, is_constraint, page_size, parse_uuid, timestamp};
use sqlx::{FromRow, PgConnection, PgPool};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::saga::{CommandTx, OrderSaga};

pub struct OrderApi {
    pub pool: PgPool,
    pub saga: OrderSaga,
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
}

#[derive(FromRow)]
struct HistoryRow {
    from_status: Option<String>,
    to_status: String,
    event_id: Uuid,
    event_type: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

const SELECT: &str = "SELECT order_id, user_id, status, total_minor, failure_reason, idempotency_key, \
                      created_at, updated_at FROM orders";

async fn load(conn: &mut PgConnection, order_id: Uuid, with_history: bool) -> Result<Option<Order>, sqlx::Error> {
    let Some(row) = sqlx::query_as::<_, OrderRow>(&format!("{SELECT} WHERE order_id = $1"))
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut order = to_proto(row);
    order.items = items(conn, order_id).await?;
    if with_history {
        let rows: Vec<HistoryRow> = sqlx::query_as(
            "SELECT from_status, to_status, event_id, event_type, reason, at FROM order_status_history \
             WHERE order_id = $1 ORDER BY id",
        )
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await?;
        order.history = rows
            .into_iter()
            .map(|h| StatusChange {
                from_status: h.from_status.unwrap_or_default(),
                to_status: h.to_status,
                event_id: h.event_id.to_string(),
                event_type: h.event_type,
                reason: h.reason.unwrap_or_default(),
                at: timestamp(h.at),
            })
            .collect();
    }
    Ok(Some(order))
}

async fn items(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<OrderItem>, sqlx::Error> {
    let rows: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT product_id, quantity FROM order_items WHERE order_id = $1 ORDER BY line_no")
            .bind(order_id)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(p, quantity)| OrderItem { product_id: p.to_string(), quantity }).collect())
}

fn to_proto(r: OrderRow) -> Order {
    Order {
        order_id: r.order_id.to_string(),
        user_id: r.user_id.to_string(),
        status: r.status,
        items: Vec::new(),
        total_minor: r.total_minor,
        failure_reason: r.failure_reason.unwrap_or_default(),
        idempotency_key: r.idempotency_key,
        created_at: timestamp(r.created_at),
        updated_at: timestamp(r.updated_at),
        history: Vec::new(),
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

impl OrderApi {
    /// The order an idempotency key already created: `Ok(None)` when the key is new.
    async fn existing(&self, user_id: Uuid, key: &str, fp: &str) -> Result<Option<Order>, Status> {
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let found: Option<(Uuid, String)> =
            sqlx::query_as("SELECT order_id, request_hash FROM orders WHERE user_id = $1 AND idempotency_key = $2")
                .bind(user_id)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(internal)?;
        let Some((order_id, stored)) = found else { return Ok(None) };
        if stored != fp {
            return Err(Status::already_exists("idempotency_key was already used for a different order"));
        }
        load(&mut conn, order_id, true).await.map_err(internal)
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let traceparent = saga_runtime::trace::from_grpc_or_new(&request);
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
        if let Some(order) = self.existing(user_id, &r.idempotency_key, &fp).await? {
            return Ok(Response::new(CreateOrderResponse { order: Some(order), created: false }));
        }
        let tx = self.pool.begin().await.map_err(internal)?;
        let mut ctx = CommandTx {
            tx,
            idempotency_key: r.idempotency_key.clone(),
            fingerprint: fp.clone(),
            traceparent: traceparent.clone(),
        };
        let trace = TraceContext { traceparent: Some(traceparent), tracestate: None };
        let created = run_create_order(&self.saga, &mut ctx, CreateOrder { user_id, items }, trace)
            .instrument(tracing::info_span!("create_order", %user_id))
            .await;
        let event = match created {
            Ok(event) => event,
            Err(saga_generated::commands::CommandError::Handler(crate::saga::SagaError::Db(e)))
                if is_constraint(&e, "orders_idempotency_key") =>
            {
                // A concurrent call with the same key won the race: answer with its order.
                drop(ctx);
                let order = self.existing(user_id, &r.idempotency_key, &fp).await?;
                return Ok(Response::new(CreateOrderResponse { order, created: false }));
            }
            Err(e) => return Err(internal(e)),
        };
        let order_id = event.order_id;
        sqlx::query(
            "INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type) \
             VALUES ($1, NULL, $2, $3, $4)",
        )
        .bind(order_id)
        .bind(OrderStatus::INITIAL.as_str())
        .bind(event.event_id)
        .bind(event.event_type())
        .execute(&mut *ctx.tx)
        .await
        .map_err(internal)?;
        let order = load(&mut ctx.tx, order_id, true).await.map_err(internal)?;
        ctx.tx.commit().await.map_err(internal)?;
        tracing::info!(%order_id, %user_id, "order created; saga started");
        Ok(Response::new(CreateOrderResponse { order, created: true }))
    }

    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        let order_id = parse_uuid("order_id", &request.into_inner().order_id)?;
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let order = load(&mut conn, order_id, true).await.map_err(internal)?;
        order.map(Response::new).ok_or_else(|| Status::not_found(format!("no order {order_id}")))
    }

    async fn list_orders(&self, request: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let r = request.into_inner();
        let user_id = parse_uuid("user_id", &r.user_id)?;
        let limit = page_size(r.page_size, 20, 100)?;
        // Order ids are UUIDv7 (time-ordered), so keyset paging on the id
        // descending lists newest first and is stable under inserts.
        let before = if r.page_token.is_empty() { Uuid::max() } else { parse_uuid("page_token", &r.page_token)? };
        let rows: Vec<OrderRow> =
            sqlx::query_as(&format!("{SELECT} WHERE user_id = $1 AND order_id < $2 ORDER BY order_id DESC LIMIT $3"))
                .bind(user_id)
                .bind(before)
                .bind(limit + 1)
                .fetch_all(&self.pool)
                .await
                .map_err(internal)?;
        let more = rows.len() as i64 > limit;
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let mut orders = Vec::with_capacity(rows.len());
        for row in rows.into_iter().take(limit as usize) {
            let order_id = row.order_id;
            let mut order = to_proto(row);
            order.items = items(&mut conn, order_id).await.map_err(internal)?;
            orders.push(order);
        }
        let next_page_token = match (more, orders.last()) {
            (true, Some(last)) => last.order_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListOrdersResponse { orders, next_page_token }))
    }
}
