//! Orders: place (idempotently), read, list, and follow a saga as it runs.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use saga_generated::status::OrderStatus;
use saga_proto::order as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::balance::Idempotence;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, ApiQuery, Validate, parse_id};
use crate::order_feed::{Following, News, OrderFeed};
use crate::routes::products::PageQuery;
use crate::session::Auth;
use crate::state::{AppState, Backends};
use saga_process::shutdown::end_when;

pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    #[schema(value_type = uuid::Uuid)]
    pub product_id: String,
    /// 1 to 10000 units.
    #[schema(example = 1, minimum = 1, maximum = 10000)]
    pub quantity: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// 1 to 100 lines, each product at most once. Prices come from the catalogue.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderItem>,
}

/// The order service's rules (`saga_proto::order::CreateOrderRequest`), checked
/// here too so an invalid body is refused before admission control.
impl Validate for CreateOrder {
    fn validate(&self) -> Vec<FieldError> {
        let items: Vec<pb::OrderItem> = self.items.iter().map(OrderItem::to_proto).collect();
        pb::CreateOrderRequest::item_violations(&items).into_iter().map(field_error).collect()
    }
}

impl OrderItem {
    fn to_proto(&self) -> pb::OrderItem {
        pb::OrderItem { product_id: self.product_id.to_lowercase(), quantity: self.quantity }
    }
}

/// A rule the order service holds a request to, as this API names the field.
fn field_error(violation: pb::Violation) -> FieldError {
    let field = if violation.field == "idempotency_key" { IDEMPOTENCY_KEY.to_owned() } else { violation.field };
    FieldError::new(field, violation.message)
}

/// One transition of an order's status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusChange {
    /// Absent on the first row (the order was created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_status: Option<String>,
    #[schema(example = "completed")]
    pub to_status: String,
    /// The saga event that caused the change.
    pub event_id: String,
    #[schema(example = "payment.completed")]
    pub event_type: String,
    /// Why, when the event says (e.g. `insufficient_stock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at: String,
}

impl From<pb::StatusChange> for StatusChange {
    fn from(c: pb::StatusChange) -> StatusChange {
        StatusChange {
            from_status: Some(c.from_status).filter(|s| !s.is_empty()),
            to_status: c.to_status,
            event_id: c.event_id,
            event_type: c.event_type,
            reason: Some(c.reason).filter(|s| !s.is_empty()),
            at: c.at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    #[schema(value_type = uuid::Uuid)]
    pub id: String,
    #[schema(value_type = uuid::Uuid)]
    pub user_id: String,
    /// `created`, `inventory_reserved`, `paid`, then one of the terminal statuses
    /// `completed` (shipped), `inventory_reserved_failed`, `payment_failed`,
    /// `shipping_failed`, `cancelled` (the saga's status machine, docs/saga.md).
    #[schema(example = "completed")]
    pub status: String,
    pub items: Vec<OrderItem>,
    /// Total in minor units, once the stock is reserved and the order priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub idempotency_key: String,
    pub created_at: String,
    pub updated_at: String,
    /// Oldest first; empty in lists.
    pub history: Vec<StatusChange>,
}

impl From<pb::Order> for Order {
    fn from(o: pb::Order) -> Order {
        Order {
            id: o.order_id,
            user_id: o.user_id,
            status: o.status,
            items: o.items.into_iter().map(|i| OrderItem { product_id: i.product_id, quantity: i.quantity }).collect(),
            total_minor: o.total_minor,
            failure_reason: Some(o.failure_reason).filter(|s| !s.is_empty()),
            idempotency_key: o.idempotency_key,
            created_at: o.created_at,
            updated_at: o.updated_at,
            history: o.history.into_iter().map(StatusChange::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get(IDEMPOTENCY_KEY).ok_or_else(|| ApiError::field(IDEMPOTENCY_KEY, "is required"))?;
    let key = value.to_str().map_err(|_| ApiError::field(IDEMPOTENCY_KEY, "must be printable ASCII"))?;
    if let Some(violation) = pb::CreateOrderRequest::key_violation(key) {
        return Err(ApiError::Validation { fields: vec![field_error(violation)] });
    }
    Ok(key.to_owned())
}

/// Place an order and start its saga.
///
/// The `Idempotency-Key` header makes retries safe: the same key with the
/// same items returns the same order (200) and starts no second saga; the
/// same key with other items is a 409. Keys are scoped per user.
///
/// Products are not looked up here: the product service is the one that
/// knows them, at the saga's stock step. An order naming a product that does
/// not exist is placed, and its saga fails there (its event stream ends in
/// `inventory_reserved_failed`), like an order for more than is in stock.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = CreateOrder,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key, 1 to 200 printable ASCII characters",
        pattern = "^[!-~]{1,200}$")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Order placed; its saga started", body = Order),
        (status = 200, description = "The same key and items were sent before: the same order", body = Order),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 409, description = "The key was used with other items", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 503, description = "Admission control: more sagas are at risk of missing their deadline than the \
            platform accepts (`ADMISSION_MAX_AT_RISK`); nothing was placed. Retry after the `Retry-After` seconds \
            with the same Idempotency-Key", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let key = idempotency_key(&headers)?;
    state.admission.admit().map_err(ApiError::Overloaded)?;
    let request = pb::CreateOrderRequest {
        user_id: auth.session.user_id.to_string(),
        items: body.items.iter().map(OrderItem::to_proto).collect(),
        idempotency_key: key,
    };
    let reply = state
        .backends
        .order_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.create_order(r).await })
        .await
        .map_err(|s| {
            if let Some(violations) = pb::violations_of(&s) {
                ApiError::Validation { fields: violations.into_iter().map(field_error).collect() }
            } else if s.code() == tonic::Code::AlreadyExists {
                ApiError::Conflict("this Idempotency-Key was already used with a different request".to_owned())
            } else {
                s.into()
            }
        })?;
    let reply = reply.into_inner();
    let order = reply.order.ok_or_else(|| ApiError::Internal("CreateOrder returned no order".to_owned()))?;
    tracing::info!(order_id = %order.order_id, created = reply.created, "order placed");
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(order.into())))
}

/// The order if the caller may see it: their own, or any for an admin.
/// Someone else's order is a 404, so ids of others' orders leak nothing.
async fn visible_order(backends: &Backends, auth: &Auth, id: Uuid) -> Result<pb::Order, ApiError> {
    let request = pb::GetOrderRequest { order_id: id.to_string() };
    let order = backends
        .order_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.get_order(r).await })
        .await?
        .into_inner();
    if auth.is_admin() || order.user_id == auth.session.user_id.to_string() {
        Ok(order)
    } else {
        Err(ApiError::NotFound("order not found".to_owned()))
    }
}

/// One order with its status history.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 404, description = "No such order, or not the caller's", body = ErrorBody),
    ))]
pub async fn get(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Json<Order>, ApiError> {
    let id = parse_id("id", &id)?;
    Ok(Json(visible_order(&state.backends, &auth, id).await?.into()))
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the caller's orders", body = OrderPage),
        (status = 400, description = "Invalid paging", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let request = pb::ListOrdersRequest {
        user_id: auth.session.user_id.to_string(),
        page_size: query.page_size.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
    };
    let reply = state
        .backends
        .order_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.list_orders(r).await })
        .await?
        .into_inner();
    Ok(Json(OrderPage {
        items: reply.orders.into_iter().map(Order::from).collect(),
        next_page_token: Some(reply.next_page_token).filter(|t| !t.is_empty()),
    }))
}

fn is_terminal(status: &str) -> bool {
    status.parse::<OrderStatus>().is_ok_and(OrderStatus::is_terminal)
}

/// Server-sent events: one `status` event per status change, then `end`.
///
/// Every row of the order's status history is sent as an event `status`
/// (data: a `StatusChange`, id: its position in the history, from 1), the
/// rows already there first. Once the order reaches a terminal status the
/// stream sends an event `end` (data: the final `Order`) and closes. A client
/// that reconnects with `Last-Event-ID: n` gets only the rows after n. A
/// gateway that stops ends its streams with an event `reconnect` (no id):
/// reconnect to any gateway with the last id and nothing is lost or repeated. New
/// rows are pushed: the order service's change feed brings each new row to
/// the gateway as it commits (the gateway reads the order again only when
/// it may have missed one, and polls only while that feed is down). A stream
/// whose session is revoked or expires ends with an `error` event (401 body).
#[utoipa::path(get, path = "/api/v1/orders/{id}/events", tag = "orders",
    params(
        ("id" = uuid::Uuid, Path, description = "Order id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "An event stream: `status` events, then `end`", content_type = "text/event-stream", body = OrderStreamEvent),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 404, description = "No such order, or not the caller's", body = ErrorBody),
    ))]
pub async fn events(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id("id", &id)?;
    // Followed before the first read: a change committed in between wakes the stream.
    let following = state.order_feed.follow(id);
    let first = visible_order(&state.backends, &auth, id).await?;
    let sent = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let poll = Duration::from_millis(state.config.sse_poll_ms.max(10));
    let until = Instant::now() + Duration::from_secs(state.config.sse_max_secs);
    let recheck = Duration::from_millis(state.config.sse_recheck_ms.max(10));
    let wait = Wait { feed: state.order_feed.clone(), following, poll, recheck, until };
    let stream = order_events(state.backends.clone(), id, first, sent, wait);
    let stream = end_when(stream, state.sessions.ended(&auth), Ok(session_ended_event()));
    let stopping = state.shutdown.clone();
    let stream = end_when(stream, async move { stopping.wait().await }, Ok(super::reconnect_event()));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One server-sent event of `GET /orders/{id}/events`, as a client's SSE parser sees it.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes the stream in the OpenAPI document; axum writes the events")]
pub struct OrderStreamEvent {
    /// `status` (data: a `StatusChange`), `end` (data: the final `Order`),
    /// `error` (data: an `ErrorBody`; the stream then closes) or `reconnect`
    /// (the gateway is stopping: reconnect with `Last-Event-ID`; the stream then closes).
    pub event: StreamEventKind,
    /// Position of a `status` event in the history, from 1; resume with `Last-Event-ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The event's JSON document.
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, reason = "describes the stream in the OpenAPI document")]
pub enum StreamEventKind {
    Status,
    End,
    Error,
    Reconnect,
}

/// The `error` event that ends a stream whose session has ended.
fn session_ended_event() -> Event {
    let body = serde_json::to_string(&ApiError::Unauthorized(crate::session::SESSION_ENDED).body()).unwrap_or_default();
    Event::default().event("error").data(body)
}

/// How an event stream waits for its order to change.
struct Wait {
    feed: OrderFeed,
    following: Following,
    /// The poll period while the change feed is down.
    poll: Duration,
    /// The period of the reads while it is up (a change never announced is late, not lost).
    recheck: Duration,
    /// When the stream closes (the client reconnects with `Last-Event-ID`).
    until: Instant,
}

/// Why a waiting event stream woke.
enum Woken {
    /// The feed brought these changes.
    Changes(Vec<pb::OrderChanged>),
    /// Read the order again: the feed may have missed a change, or it is
    /// time for the periodic read.
    Read,
    /// The stream's time is up.
    TimeUp,
}

impl Wait {
    /// Until the order may have changed.
    async fn next(&mut self) -> Woken {
        let now = Instant::now();
        if now > self.until {
            return Woken::TimeUp;
        }
        let period = if self.feed.live() { self.recheck } else { self.poll };
        let wait = period.min(self.until - now);
        tokio::select! {
            news = self.following.changed() => match news {
                News::Changes(changes) => Woken::Changes(changes),
                News::Resync => Woken::Read,
            },
            () = tokio::time::sleep(wait) => Woken::Read,
        }
    }
}

struct Follow {
    backends: Backends,
    id: Uuid,
    /// The latest copy of the order.
    order: pb::Order,
    /// History rows already sent.
    sent: usize,
    wait: Wait,
    done: bool,
}

fn order_events(
    backends: Backends,
    id: Uuid,
    first: pb::Order,
    sent: usize,
    wait: Wait,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let follow = Follow { backends, id, order: first, sent, wait, done: false };
    futures::stream::unfold(follow, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            if let Some(row) = f.order.history.get(f.sent).cloned() {
                f.sent += 1;
                let event = Event::default()
                    .event("status")
                    .id(f.sent.to_string())
                    .json_data(StatusChange::from(row))
                    .unwrap_or_else(|_| Event::default().event("status"));
                return Some((Ok(event), f));
            }
            if is_terminal(&f.order.status) {
                f.done = true;
                let event = Event::default()
                    .event("end")
                    .json_data(Order::from(f.order.clone()))
                    .unwrap_or_else(|_| Event::default());
                return Some((Ok(event), f));
            }
            let applied = match f.wait.next().await {
                Woken::Changes(changes) => f.order.apply(changes),
                Woken::Read => false,
                // A client reconnects with Last-Event-ID and continues.
                Woken::TimeUp => return None,
            };
            if applied {
                continue;
            }
            let request = pb::GetOrderRequest { order_id: f.id.to_string() };
            match f
                .backends
                .order_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.get_order(r).await })
                .await
            {
                Ok(reply) => f.order = reply.into_inner(),
                Err(status) => {
                    let error = ApiError::from(status);
                    tracing::warn!(order_id = %f.id, %error, "event stream stops");
                    f.done = true;
                    let body = serde_json::to_string(&error.body()).unwrap_or_default();
                    return Some((Ok(Event::default().event("error").data(body)), f));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(from: &str, to: &str) -> pb::StatusChange {
        pb::StatusChange { from_status: from.into(), to_status: to.into(), ..pb::StatusChange::default() }
    }

    fn change(position: u32, from: &str, to: &str) -> pb::OrderChanged {
        let after = pb::Order {
            status: to.into(),
            total_minor: Some(2500),
            updated_at: format!("t{position}"),
            ..pb::Order::default()
        };
        pb::OrderChanged::after(after, row(from, to), position)
    }

    fn created() -> pb::Order {
        pb::Order { status: "created".into(), history: vec![row("", "created")], ..pb::Order::default() }
    }

    #[test]
    fn changes_in_sequence_are_applied_as_a_read_would_show_them() {
        let mut order = created();
        let changes = vec![change(1, "", "created"), change(2, "created", "inventory_reserved")];
        assert!(order.apply(changes), "the first was in the read already; the second follows it");
        assert_eq!(order.history.len(), 2);
        assert_eq!(
            (order.status.as_str(), order.total_minor, order.updated_at.as_str()),
            ("inventory_reserved", Some(2500), "t2")
        );
        assert!(order.apply(vec![change(3, "inventory_reserved", "completed")]));
        assert_eq!(
            order.history.iter().map(|r| r.to_status.as_str()).collect::<Vec<_>>(),
            ["created", "inventory_reserved", "completed"]
        );
        assert!(is_terminal(&order.status));
    }

    #[test]
    fn a_gap_or_a_change_without_its_row_asks_for_a_read() {
        let mut order = created();
        assert!(!order.apply(vec![change(3, "inventory_reserved", "completed")]), "row 2 was never heard");
        let bare = pb::OrderChanged { status: "completed".into(), ..pb::OrderChanged::default() };
        assert!(!created().apply(vec![bare]), "an older server sends no row");
        let mut without_order = change(2, "created", "inventory_reserved");
        without_order.order = None;
        assert!(!created().apply(vec![without_order]), "an older server sends no order");
    }

    #[test]
    fn a_change_keeps_the_items_of_the_read() {
        let item = pb::OrderItem { product_id: "p".into(), quantity: 2 };
        let mut order = pb::Order { items: vec![item.clone()], ..created() };
        assert!(order.apply(vec![change(2, "created", "inventory_reserved")]));
        assert_eq!(order.items, [item]);
    }
}
