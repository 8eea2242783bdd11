//! The order event stream is pushed, not polled: a gateway whose streams
//! would read their order only once an hour (`SSE_POLL_MS` and
//! `SSE_RECHECK_MS`) still shows every status of a saga and ends its stream,
//! which only the order service's change feed (`WatchOrders`, fed by each
//! instance as its transitions commit) can have made it do; and what it sent from the
//! feed's changes is what a read of the order shows.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use saga_tests::http::{Api, PrivateGateway};
use saga_tests::saga::{COMPLETED_PATH, PrivateSaga};
use saga_tests::{stack, unique};
use serde_json::json;

/// Generous: the saga crosses Kafka twice; never a performance assertion.
const SAGA_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn an_event_stream_follows_its_order_by_the_change_feed_alone() {
    let stack = stack();
    let hour = "3600000";
    let gateway = PrivateGateway::start(&stack, &[("SSE_POLL_MS", hour), ("SSE_RECHECK_MS", hour)]).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 700, 100).await;
    api.credit(&admin, &customer_id, 10_000).await;
    // One order completes, one fails payment (14,000 is more than the balance left).
    let sagas: [(i32, &[&str]); 2] = [(1, &COMPLETED_PATH), (20, &["created", "inventory_reserved", "payment_failed"])];
    for (quantity, expected) in sagas {
        follow_to_the_end(api, &customer, &product, quantity, expected).await;
    }
}

/// Places an order of `quantity` and follows its event stream to the end:
/// its `status` events are `expected` and each is its history row as a read
/// shows it, and the `end` event is the order as a read shows it.
async fn follow_to_the_end(api: &Api, customer: &str, product: &str, quantity: i32, expected: &[&str]) -> String {
    let placed =
        api.place_order(customer, &unique("key"), &json!([{ "product_id": product, "quantity": quantity }])).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let expected_status = *expected.last().expect("a last status");
    let order_id = placed.body["id"].as_str().expect("order id").to_owned();
    let events = api.order_events(customer, &order_id, SAGA_DEADLINE).await;
    let statuses: Vec<&str> =
        events.iter().filter(|(name, _)| name == "status").filter_map(|(_, d)| d["to_status"].as_str()).collect();
    assert_eq!(statuses, expected, "events: {events:?}");
    let (last, order) = events.last().expect("an end event");
    assert_eq!((last.as_str(), order["status"].as_str()), ("end", Some(expected_status)), "{events:?}");
    // The streams built the final order from the feed's changes, without
    // reading it: it must be what a read shows.
    let read = api.get(&format!("/api/v1/orders/{order_id}"), Some(customer)).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(order, &read.body, "the `end` event against GET /orders/{{id}}");
    let rows: Vec<&serde_json::Value> = events.iter().filter(|(name, _)| name == "status").map(|(_, d)| d).collect();
    let history: Vec<&serde_json::Value> = read.body["history"].as_array().expect("history").iter().collect();
    assert_eq!(rows, history, "each `status` event is its history row as a read shows it");
    order_id
}

/// The sagas (by trace id) an order instance's log shows moving into each status.
fn transitions(log: &Path) -> HashMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(log).expect("the instance's log");
    let mut moved: HashMap<String, BTreeSet<String>> = HashMap::new();
    for line in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if line["message"] != "order status changed" {
            continue;
        }
        let trace = line["spans"].as_array().into_iter().flatten().find_map(|s| s["trace_id"].as_str());
        if let (Some(trace), Some(to)) = (trace, line["to"].as_str()) {
            moved.entry(to.to_owned()).or_default().insert(trace.to_owned());
        }
    }
    moved
}

/// Two order instances: each tells only of the changes it commits itself,
/// and a saga created by one moves on in whichever instance's consumer owns
/// its partition. A gateway that follows every instance still streams each
/// saga to its end with no poll and no re-read; the instances' logs show
/// sagas that one instance created and the other moved on.
#[tokio::test]
async fn an_event_stream_hears_the_changes_of_every_order_instance() {
    let stack = stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let (second, second_log) = saga.start_replica(&stack, "order").await;
    let orders = format!("{},{second}", saga.url("order"));
    let (product_url, user_url) = (saga.url("product"), saga.url("user"));
    let hour = "3600000";
    let gateway = PrivateGateway::start(
        &stack,
        &[
            ("ORDER_GRPC_URL", &orders),
            ("PRODUCT_GRPC_URL", &product_url),
            ("USER_GRPC_URL", &user_url),
            ("SSE_POLL_MS", hour),
            ("SSE_RECHECK_MS", hour),
        ],
    )
    .await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 100, 1_000).await;
    api.credit(&admin, &customer_id, 1_000_000).await;
    for _ in 0..12 {
        follow_to_the_end(api, &customer, &product, 1, &COMPLETED_PATH).await;
    }
    let (first, second) = (transitions(&saga.log_of("order")), transitions(&second_log));
    let crossed = |a: &HashMap<String, BTreeSet<String>>, b: &HashMap<String, BTreeSet<String>>| {
        a.get("created")
            .into_iter()
            .flatten()
            .filter(|t| b.get("completed").is_some_and(|done| done.contains(*t)))
            .count()
    };
    assert!(
        crossed(&first, &second) + crossed(&second, &first) > 0,
        "no saga was created by one instance and completed by the other: {first:?} / {second:?}"
    );
    drop(gateway);
    saga.shutdown(&stack).await;
}

/// One server-sent event with its id, as a client that resumes needs it.
#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    name: String,
    data: serde_json::Value,
}

/// Takes the complete events off the front of `buffer`.
fn take_events(buffer: &mut String) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut id, mut name, mut data) = (None, "message".to_owned(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() {
            let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data));
            events.push(SseEvent { id, name, data });
        }
    }
    events
}

/// The gateways a load balancer sends to: a stopping one is taken out first.
type Rotation = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn in_rotation(rotation: &Rotation, turn: usize) -> String {
    let gateways = rotation.lock().expect("rotation").clone();
    gateways[turn % gateways.len()].clone()
}

/// What a client following one order saw: each `status` event's (id, status), how often
/// it was told to reconnect, and the final order.
struct Followed {
    statuses: Vec<(String, String)>,
    reconnects: usize,
    end: serde_json::Value,
}

/// Follows an order's event stream to its `end` the way a resuming client does: on
/// `reconnect` it connects again, to a gateway in rotation, with `Last-Event-ID`.
async fn follow_across_restarts(rotation: Rotation, token: String, order_id: String) -> Followed {
    let http = reqwest::Client::new();
    let mut followed = Followed { statuses: Vec::new(), reconnects: 0, end: serde_json::Value::Null };
    for turn in 0.. {
        assert!(turn < 20, "{order_id}: reconnected {turn} times without reaching the end");
        let base = in_rotation(&rotation, turn);
        let mut request = http
            .get(format!("{base}/api/v1/orders/{order_id}/events"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(180));
        if let Some((id, _)) = followed.statuses.last() {
            request = request.header("Last-Event-ID", id);
        }
        let mut response = request.send().await.unwrap_or_else(|e| panic!("{order_id} at {base}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "{order_id} at {base}");
        let mut buffer = String::new();
        'stream: loop {
            let chunk = response.chunk().await.unwrap_or_else(|e| panic!("{order_id}: the stream broke off: {e}"));
            let Some(chunk) = chunk else { panic!("{order_id}: the stream closed without `end` or `reconnect`") };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            for event in take_events(&mut buffer) {
                match event.name.as_str() {
                    "status" => followed.statuses.push((
                        event.id.unwrap_or_else(|| panic!("{order_id}: a status event without an id")),
                        event.data["to_status"].as_str().unwrap_or_default().to_owned(),
                    )),
                    "end" => {
                        followed.end = event.data;
                        return followed;
                    }
                    "reconnect" => {
                        followed.reconnects += 1;
                        break 'stream;
                    }
                    other => panic!("{order_id}: unexpected event {other}: {}", event.data),
                }
            }
        }
    }
    unreachable!("the loop returns or panics")
}

/// A rolling restart of two gateway replicas (sessions shared in Redis) while order event
/// streams and an admin's console overview stream are open and reads keep coming: each
/// gateway, out of rotation first as a load balancer would take it, ends its streams with
/// `reconnect`, drains, and exits cleanly within the bound; every client resumes on the
/// other replica and sees its order's every status once, in order, to the end; no request
/// of the load fails.
#[tokio::test]
async fn a_rolling_restart_of_two_gateways_loses_no_stream_and_no_request() {
    let stack = stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let sessions = format!("{}:", unique("rolling"));
    let (order_url, product_url, user_url) = (saga.url("order"), saga.url("product"), saga.url("user"));
    let env = [
        ("ORDER_GRPC_URL", order_url.as_str()),
        ("PRODUCT_GRPC_URL", product_url.as_str()),
        ("USER_GRPC_URL", user_url.as_str()),
        ("REDIS_KEY_PREFIX", sessions.as_str()),
    ];
    let a = PrivateGateway::start(&stack, &env).await;
    let b = PrivateGateway::start(&stack, &env).await;
    let admin = a.api.admin_token().await;
    let (customer, customer_id) = a.api.customer().await;
    let product = a.api.create_product(&admin, 100, 1_000).await;
    a.api.credit(&admin, &customer_id, 1_000_000).await;
    // The payments wait while the gateways restart: the orders stay in inventory_reserved.
    saga.stop("user").await;
    let mut orders = Vec::new();
    for _ in 0..4 {
        let placed =
            a.api.place_order(&customer, &unique("rolling"), &json!([{ "product_id": product, "quantity": 1 }])).await;
        assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
        orders.push(placed.body["id"].as_str().expect("order id").to_owned());
    }
    let rotation: Rotation = std::sync::Arc::new(std::sync::Mutex::new(vec![a.api.base.clone(), b.api.base.clone()]));
    // Every stream starts on A.
    let followers: Vec<_> = orders
        .iter()
        .map(|id| tokio::spawn(follow_across_restarts(rotation.clone(), customer.clone(), id.clone())))
        .collect();
    let (first_overview, overview_open) = tokio::sync::oneshot::channel();
    let overview = tokio::spawn({
        let (http, url, admin) =
            (a.api.http.clone(), a.api.url("/api/v1/admin/console/overview/stream"), admin.clone());
        async move {
            let mut response = http.get(url).bearer_auth(admin).send().await.expect("overview stream");
            assert_eq!(response.status(), StatusCode::OK);
            let (mut buffer, mut names) = (String::new(), Vec::new());
            let mut first_overview = Some(first_overview);
            while let Some(chunk) = response.chunk().await.expect("overview chunk") {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                names.extend(take_events(&mut buffer).into_iter().map(|e| e.name));
                if names.iter().any(|n| n == "overview") {
                    first_overview.take().map(|open| open.send(()));
                }
            }
            names
        }
    });
    tokio::time::timeout(SAGA_DEADLINE, overview_open).await.expect("the overview came").expect("overview reader");
    // Reads, round robin over the gateways in rotation, until told to stop; the successes
    // are counted per phase of the restart (`phase`), so "throughout" needs no rate.
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next_phase = || phase.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let load = tokio::spawn({
        let (rotation, stop, phase, token, order, product) =
            (rotation.clone(), stop_load.clone(), phase.clone(), customer.clone(), orders[0].clone(), product.clone());
        async move {
            let http = reqwest::Client::new();
            let (mut ok, mut failed) = (vec![0usize; 5], Vec::new());
            for turn in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let base = in_rotation(&rotation, turn);
                // Reads of the services that run throughout (the user service is away a while).
                let request = match turn % 3 {
                    0 => http.get(format!("{base}/api/v1/products/{product}")),
                    1 => http.get(format!("{base}/api/v1/orders/{order}")).bearer_auth(&token),
                    _ => http.get(format!("{base}/api/v1/products?page_size=5")),
                };
                let at = phase.load(std::sync::atomic::Ordering::Relaxed).min(ok.len() - 1);
                match request.timeout(Duration::from_secs(30)).send().await {
                    Ok(response) if response.status().is_success() => ok[at] += 1,
                    Ok(response) => failed.push(format!("{base}: {}", response.status())),
                    Err(error) => failed.push(format!("{base}: {error}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    let bound = Duration::from_secs(saga_process::shutdown::DEFAULT_GRACE_SECS);
    // A: out of rotation, then SIGTERM.
    rotation.lock().expect("rotation").retain(|g| *g != a.api.base);
    next_phase();
    let (status, took) = a.terminate(bound + Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway A did not exit cleanly within the bound: {status:?} after {took:?}"
    );
    assert!(took < bound, "gateway A took {took:?} to stop");
    let names = overview.await.expect("overview reader");
    assert_eq!(names.last().map(String::as_str), Some("reconnect"), "{names:?}");
    assert!(names.iter().any(|n| n == "overview"), "{names:?}");
    // Its replacement serves once it answers (its readiness is its own; the user service is away).
    let a2 = PrivateGateway::spawn(&stack, &env).await;
    a2.wait_for("/healthz").await;
    rotation.lock().expect("rotation").push(a2.api.base.clone());
    next_phase();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // B, whose streams now carry every order: the same.
    rotation.lock().expect("rotation").retain(|g| *g != b.api.base);
    next_phase();
    let (status, took) = b.terminate(bound + Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "gateway B did not exit cleanly within the bound: {status:?} after {took:?}"
    );
    assert!(took < bound, "gateway B took {took:?} to stop");
    next_phase();

    // The payments go through now: every stream reaches its order's end on A'.
    saga.restart(&stack, "user").await;
    for (follower, order_id) in followers.into_iter().zip(&orders) {
        let followed =
            tokio::time::timeout(SAGA_DEADLINE, follower).await.expect("the stream ended").expect("follower");
        let ids: Vec<&str> = followed.statuses.iter().map(|(id, _)| id.as_str()).collect();
        let statuses: Vec<&str> = followed.statuses.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3", "4"], "{order_id}: no status lost or repeated across reconnects");
        assert_eq!(statuses, COMPLETED_PATH, "{order_id}");
        assert_eq!(followed.end["status"], "completed", "{order_id}");
        assert_eq!(followed.reconnects, 2, "{order_id}: told to reconnect by A, then by B");
    }
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok_per_phase, failed) = load.await.expect("load");
    let ok: usize = ok_per_phase.iter().sum();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), ok + failed.len());
    // Before A leaves, while A stops, with A' and B, while B stops, after. The phases before,
    // between and after the stops last a second or more, and each was served; a stop may be
    // over before the next request begins (B's once took less than one request's round on a
    // busy machine: [43, 4, 34, 0, 64]), so the stops' own counts are not required, and that
    // no request failed at all, during them too, is the check above.
    assert!(
        [0, 2, 4].iter().all(|phase| ok_per_phase[*phase] > 0),
        "the load ran throughout: {ok_per_phase:?} requests per phase"
    );
    // A service with a call that never ends by itself (A' follows the order service's
    // change feed, `WatchOrders`) stops within the bound too, and cleanly.
    let started = std::time::Instant::now();
    saga.stop("order").await;
    assert!(started.elapsed() < bound, "the order service took {:?} to stop", started.elapsed());
    drop(a2);
    saga.shutdown(&stack).await;
}
