//! `cargo xtask saga trace` on a real saga of the test stack: its timeline across the
//! services as the databases keep it, as JSON and for a terminal; and the recorded saga
//! replayed by the scenario harness, on a database of its own, ending the same way.

use saga_generated::commands::CreateOrder;
use saga_generated::handlers::OrderInbound;
use saga_generated::scenario::OrderScenario;
use saga_generated::{Envelope, OrderCreated, OrderStatus};
use saga_operator::trace::{Entry, Trace, TraceError};
use saga_tests::saga::Clients;
use uuid::Uuid;

use order_service::saga::{CommandTx, OrderSaga, Timeouts};

fn transitions(trace: &Trace) -> Vec<(Option<String>, String, String)> {
    trace
        .timeline
        .iter()
        .filter_map(|e| match e {
            Entry::Transition { from, to, event_type, .. } => Some((from.clone(), to.clone(), event_type.clone())),
            _ => None,
        })
        .collect()
}

/// `(service, event type)` of each entry of one kind.
fn of_kind(trace: &Trace, published: bool) -> Vec<(String, String)> {
    let mut out: Vec<_> = trace
        .timeline
        .iter()
        .filter_map(|e| match e {
            Entry::Published { service, event_type, .. } if published => Some((service.clone(), event_type.clone())),
            Entry::Consumed { service, event_type, .. } if !published => Some((service.clone(), event_type.clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn pair(service: &str, event: &str) -> (String, String) {
    (service.to_owned(), event.to_owned())
}

#[tokio::test]
async fn a_completed_saga_is_traced_across_the_services_and_replays_the_same_in_a_scenario() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let product = c.product(400, 5).await;
    let placed = c.order(&buyer, &[(&product, 2)]).await;
    c.wait_status(&placed.order_id, "completed").await;
    let order_id: Uuid = placed.order_id.parse().expect("an order id");

    // The user service's payment.completed is consumed by the order service before the
    // order completes; the relay may still be on its way with order.completed.
    let trace = saga_tests::saga::eventually("order.completed published", || async {
        let trace = saga_operator::trace::collect(&stack.sources(""), order_id).await.expect("the trace");
        trace
            .timeline
            .iter()
            .any(|e| matches!(e, Entry::Published { event_type, published_at: Some(_), .. } if event_type == "order.completed"))
            .then_some(trace)
    })
    .await;
    // What `--json` prints reads back the same.
    let json = serde_json::to_string_pretty(&trace).expect("serializes");
    let trace: Trace = serde_json::from_str(&json).expect("the JSON reads back");

    assert_eq!(trace.status, "completed");
    assert_eq!(trace.trace_id.as_deref().map(str::len), Some(32), "the trace id of the saga");
    assert!(trace.next.is_empty(), "a completed saga allows nothing more: {:?}", trace.next);
    assert_eq!(
        transitions(&trace),
        [
            (None, "created".into(), "order.created".into()),
            (Some("created".into()), "inventory_reserved".into(), "stock.reduction.success".into()),
            (Some("inventory_reserved".into()), "paid".into(), "payment.completed".into()),
            (Some("paid".into()), "completed".into(), "shipment.booked".into()),
        ]
    );
    assert_eq!(
        of_kind(&trace, true),
        [
            pair("order", "order.completed"),
            pair("order", "order.created"),
            pair("product", "stock.reduction.success"),
            pair("shipping", "shipment.booked"),
            pair("user", "payment.completed"),
        ]
    );
    assert_eq!(
        of_kind(&trace, false),
        [
            pair("order", "payment.completed"),
            pair("order", "shipment.booked"),
            pair("order", "stock.reduction.success"),
            pair("product", "order.created"),
            pair("shipping", "payment.completed"),
            pair("user", "stock.reduction.success"),
        ]
    );
    let text = saga_operator::trace::render(&trace, false);
    assert!(text.contains("status     created -> inventory_reserved  on stock.reduction.success"), "{text}");
    assert!(text.contains("next: nothing (the saga ended)"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when asked for none");
    assert!(saga_operator::trace::render(&trace, true).contains("\x1b["), "colour for a terminal");

    // Replay: the events the order service consumed, in the order it did, through the
    // harness on a fresh database, under the recorded key.
    let (pool, name) = saga_tests::scratch_database(&stack).await;
    saga_runtime::db::migrate(&pool, &order_service::MIGRATOR).await.expect("migrations");
    let mut s = OrderScenario::new(OrderSaga::new(Timeouts { scale_percent: 100 }));
    let mut ctx = CommandTx {
        tx: pool.begin().await.expect("begin"),
        idempotency_key: "replay".to_owned(),
        fingerprint: "replay".to_owned(),
        traceparent: saga_process::trace::new_traceparent(),
    };
    let recorded = |id: Uuid| trace.events.iter().find(|e| e.event_id == id).expect("the event was recorded");
    let created = trace.events.iter().find(|e| e.event_type == "order.created").expect("order.created recorded");
    let created = Envelope::<OrderCreated>::decode(&created.bytes().expect("base64")).expect("decodes");
    let command = CreateOrder { user_id: created.payload.user_id, items: created.payload.items };
    s.start_create_order_keyed(&mut ctx, order_id, command).await.expect("started");
    for entry in &trace.timeline {
        let Entry::Consumed { service, event_id, .. } = entry else { continue };
        if service != "order" {
            continue;
        }
        let event = recorded(*event_id);
        let bytes = event.bytes().expect("base64");
        let inbound = OrderInbound::decode(&event.topic, &bytes).expect("decodes").expect("the order subscribes");
        s.when(&mut ctx.tx, inbound).await.expect("replayed");
    }
    let replayed: Vec<_> = s
        .history(order_id)
        .into_iter()
        .map(|c| (c.from.map(|f| f.as_str().to_owned()), c.to.as_str().to_owned(), c.event_type))
        .collect();
    assert_eq!(replayed, transitions(&trace), "the replay took the recorded path");
    assert_eq!(s.status(&mut ctx.tx, order_id).await.expect("reads"), Some(OrderStatus::Completed));
    ctx.tx.rollback().await.expect("rollback");
    saga_tests::drop_scratch_database(&stack, pool, &name).await;
}

#[tokio::test]
async fn an_unknown_order_is_a_clear_error() {
    let stack = saga_tests::stack();
    let unknown = Uuid::now_v7();
    let error = saga_operator::trace::collect(&stack.sources(""), unknown).await.expect_err("no such order");
    assert!(matches!(error, TraceError::UnknownOrder(id) if id == unknown), "{error:?}");
    assert_eq!(error.to_string(), format!("no order {unknown} in the order service's database"));
}

/// Runs `xtask <args>` as an operator does: the binary, in a process of its own, which
/// signs in to the stack's Kafka by itself (this test process's own sign-in is not
/// inherited). Returns what it printed; panics with its output if it failed.
fn operator_runs(stack: &saga_stack::StackConfig, args: &[&str]) -> String {
    let output = std::process::Command::new(stack.binary("saga-tools"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run xtask {args:?}: {e} (cargo xtask builds it)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "xtask {args:?} failed ({}):\n{stdout}\n{stderr}", output.status);
    stdout
}

/// `saga trace`, `dlq list` and `status` as an operator runs them against the running,
/// authenticated stack: each reads Kafka (the dead letters) as well as the databases, and
/// none may fail to sign in or say "unavailable" while the stack runs.
#[tokio::test]
async fn the_operator_commands_work_against_the_authenticated_stack() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let product = c.product(400, 5).await;
    let placed = c.order(&buyer, &[(&product, 1)]).await;
    c.wait_status(&placed.order_id, "completed").await;

    let trace = operator_runs(&stack, &["saga", "trace", &placed.order_id]);
    assert!(trace.contains(&placed.order_id), "{trace}");
    for step in ["created", "inventory_reserved", "completed", "order.created", "payment.completed"] {
        assert!(trace.contains(step), "{step} missing from the trace:\n{trace}");
    }
    let json = operator_runs(&stack, &["saga", "trace", "--json", &placed.order_id]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("saga trace --json prints JSON");
    assert_eq!(json["status"], "completed", "{json}");

    let listing = operator_runs(&stack, &["dlq", "list", "--show", "3"]);
    for topic in saga_generated::topology::TOPICS {
        assert!(listing.contains(&format!("{}: ", topic.dlq)), "{} missing:\n{listing}", topic.dlq);
    }
    assert!(listing.contains("outbox: "), "{listing}");

    let status = operator_runs(&stack, &["status"]);
    let dead = status.lines().find(|l| l.starts_with("dead letters:")).unwrap_or_else(|| panic!("{status}"));
    assert!(!dead.contains("unavailable"), "{dead}");
    let failed = status.lines().find(|l| l.starts_with("failed outbox rows:")).unwrap_or_else(|| panic!("{status}"));
    assert!(!failed.contains("unavailable"), "{failed}");
}
