//! The operator console on a real private saga, through a real gateway: who may open it,
//! what the overview and a saga's page show, and a dead letter listed, redriven once (and
//! only once), audited, and seen to come back through its topic; a forged letter refused,
//! and "redrive all" over more letters than a listing shows.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use reqwest::StatusCode;
use saga_generated::OrderStatus;
use saga_generated::{Envelope, Money, PaymentCompleted};
use saga_tests::http::{Api, parse_sse};
use saga_tests::saga::{SERVICES, eventually, header, messages_with_key, statuses};
use serde_json::{Value, json};

const CONSOLE: &str = "/api/v1/admin/console";

/// The sum of the samples of `name` in a Prometheus scrape whose labels include `labels`;
/// `None` when there is none.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let matches = metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Reads a server-sent event stream until it ends or `enough` says so; the events so far.
async fn read_stream(
    api: &Api,
    path: &str,
    token: &str,
    enough: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut response =
        api.http.get(api.url(path)).bearer_auth(token).timeout(Duration::from_secs(60)).send().await.expect("stream");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(response.headers()["content-type"], "text/event-stream", "{path}");
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.expect("stream chunk") {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if enough(&parse_sse(&text)) {
            break;
        }
    }
    parse_sse(&text)
}

#[tokio::test]
async fn the_console_shows_sagas_and_redrives_dead_letters_for_admins_only() {
    let stack = saga_tests::stack();
    let (saga, console, gateway) = saga_tests::saga::saga_with_console(&stack).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let admin_id = api.get("/api/v1/me", Some(&admin)).await.body["id"].as_str().expect("admin id").to_owned();
    let (customer, customer_id) = api.customer().await;

    // The page and its assets are served to anyone (they hold no data); the API to admins only.
    let page = api.http.get(api.url("/console")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("page text").contains("Saga console"));
    let svg = api.http.get(api.url("/console/assets/status.svg")).send().await.expect("svg");
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let svg = svg.text().await.expect("svg text");
    for status in OrderStatus::ALL {
        assert!(
            svg.contains(&format!("data-state=\"{}\"", status.as_str())),
            "{} missing from the diagram",
            status.as_str()
        );
    }
    for path in ["/overview", "/dlq", "/dlq/audit", "/sagas/0190f5c2-8d4e-7a3b-9c1d-2e3f4a5b6c7d"] {
        let path = format!("{CONSOLE}{path}");
        assert_eq!(api.get(&path, None).await.status, StatusCode::UNAUTHORIZED, "{path} without a token");
        let reply = api.get(&path, Some(&customer)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path} as a customer: {:?}", reply.body);
    }
    let redrive_all = json!({ "confirm": true, "all": true });
    let reply = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&customer), &redrive_all).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // One saga, through to completed.
    let product = api.create_product(&admin, 500, 10).await;
    api.credit(&admin, &customer_id, 10_000).await;
    let placed = api.place_order(&customer, "console-1", &json!([{ "product_id": product, "quantity": 2 }])).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order_id = placed.body["id"].as_str().expect("order id").to_owned();
    // Followed live from the start: trace events until it completes, then the stream ends.
    let events = read_stream(api, &format!("{CONSOLE}/sagas/{order_id}/stream"), &admin, |_| false).await;
    assert!(!events.is_empty() && events.iter().all(|(name, _)| name == "trace"), "{events:?}");
    let last = &events.last().expect("a trace").1;
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["next"], json!([]), "nothing comes after completed");

    let trace = api.get(&format!("{CONSOLE}/sagas/{order_id}"), Some(&admin)).await;
    assert_eq!(trace.status, StatusCode::OK, "{:?}", trace.body);
    let timeline = trace.body["timeline"].as_array().expect("timeline");
    let kinds = |kind: &str| timeline.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(kinds("transition"), 4, "created, inventory_reserved, paid, completed: {timeline:?}");
    assert_eq!(
        kinds("published"),
        5,
        "order.created, stock.reduction.success, payment.completed, shipment.booked, order.completed: {timeline:?}"
    );
    assert!(kinds("consumed") >= 4, "each event consumed by its subscribers: {timeline:?}");
    assert!(trace.body["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{:?}", trace.body["trace_id"]);
    assert!(timeline.iter().any(|e| e["kind"] == "consumed" && e["topic"] == "payment-events" && e["offset"].is_i64()));
    // Each event shows where the relay published it, and its consumers read it there.
    for published in timeline.iter().filter(|e| e["kind"] == "published") {
        assert!(published["partition"].is_i64() && published["offset"].is_i64(), "{published}");
        let read = timeline.iter().filter(|e| e["kind"] == "consumed" && e["event_id"] == published["event_id"]);
        for consumed in read {
            assert_eq!(
                (&consumed["partition"], &consumed["offset"]),
                (&published["partition"], &published["offset"]),
                "{consumed} {published}"
            );
        }
    }

    // Bad ids get a clear answer.
    let malformed = api.get(&format!("{CONSOLE}/sagas/not-a-uuid"), Some(&admin)).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{:?}", malformed.body);
    let unknown = uuid::Uuid::now_v7();
    let missing = api.get(&format!("{CONSOLE}/sagas/{unknown}"), Some(&admin)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{:?}", missing.body);
    assert!(missing.body["message"].as_str().is_some_and(|m| m.contains(&unknown.to_string())), "{:?}", missing.body);

    // The overview: every status of the spec, the outcome, every group's lag, every outbox.
    let overview = api.get(&format!("{CONSOLE}/overview"), Some(&admin)).await;
    assert_eq!(overview.status, StatusCode::OK, "{:?}", overview.body);
    let o = &overview.body;
    assert_eq!(o["unavailable"], json!([]), "{o}");
    let statuses: Vec<&str> =
        o["statuses"].as_array().expect("statuses").iter().map(|s| s["status"].as_str().unwrap_or("")).collect();
    assert_eq!(statuses, OrderStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let completed =
        o["statuses"].as_array().expect("statuses").iter().find(|s| s["status"] == "completed").expect("completed");
    assert_eq!(completed["count"], 1);
    let ended: i64 = o["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|m| m["counts"]["completed"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(ended, 1, "{o}");
    assert_eq!(o["durations"]["sagas"], 1, "{o}");
    let groups = saga_generated::topology::CONSUMER_GROUPS;
    assert_eq!(o["lag"].as_array().expect("lag").len(), groups.iter().map(|g| g.topics.len()).sum::<usize>());
    assert_eq!(o["outbox"].as_array().expect("outbox").len(), SERVICES.len());
    assert_eq!(o["dead_letters"].as_object().expect("dead letters").len(), saga_generated::topology::TOPICS.len());
    // And live.
    let live = read_stream(api, &format!("{CONSOLE}/overview/stream"), &admin, |events| events.len() >= 2).await;
    assert!(live.iter().take(2).all(|(name, data)| name == "overview" && data["statuses"].is_array()), "{live:?}");

    // A poison message: dead-lettered by each group that reads order-events.
    let topic = saga.topic("order-events");
    let dlq = saga.topic("order-events.dlq");
    let poison_key = saga_tests::unique("poison");
    saga_tests::producer(&saga.brokers)
        .send(FutureRecord::to(&topic).key(&poison_key).payload(b"not an event".as_slice()), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("poison produced");
    let readers = groups.iter().filter(|g| g.topics.contains(&"order-events")).count();
    let letters_of = |listing: &Value, key: &str| -> Vec<Value> {
        listing["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["dlq"] == dlq.as_str())
            .flat_map(|t| t["letters"].as_array().cloned().unwrap_or_default())
            .filter(|l| l["key"] == key)
            .collect()
    };
    let poisoned = eventually("the poison listed in the console's DLQ view", || {
        let (api, admin, key) = (api.clone(), admin.clone(), poison_key.clone());
        let letters_of = &letters_of;
        async move {
            let listing = api.get(&format!("{CONSOLE}/dlq"), Some(&admin)).await;
            let found = letters_of(&listing.body, &key);
            (found.len() == readers).then_some(found)
        }
    })
    .await;
    for letter in &poisoned {
        assert_eq!(letter["reason"], "undecodable", "{letter}");
        assert!(letter["redriven"].is_null());
        assert!(
            letter["headers"].as_array().is_some_and(|h| h.iter().any(|h| h[0] == "dlq-consumer-group")),
            "{letter}"
        );
    }

    // Redrive asks for confirmation and names real dead letters only.
    let refs: Vec<Value> = poisoned
        .iter()
        .map(|l| json!({ "topic": l["topic"], "partition": l["partition"], "offset": l["offset"] }))
        .collect();
    let unconfirmed =
        api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &json!({ "confirm": false, "messages": refs })).await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST, "{:?}", unconfirmed.body);
    let elsewhere =
        json!({ "confirm": true, "messages": [{ "topic": "somebody-elses.dlq", "partition": 0, "offset": 0 }] });
    let reply = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &elsewhere).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let beyond = json!({ "confirm": true, "messages": [{ "topic": dlq, "partition": 0, "offset": 1_000_000 }] });
    let reply = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &beyond).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);

    // Redriven once; asked again, nothing is sent twice.
    let first =
        api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &json!({ "confirm": true, "messages": refs })).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["redriven"].as_array().map(Vec::len), Some(readers), "{:?}", first.body);
    let again =
        api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &json!({ "confirm": true, "messages": refs })).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["redriven"], json!([]));
    assert_eq!(again.body["already"].as_array().map(Vec::len), Some(readers));

    // The console counted it: the letters by outcome, the requests by route and status
    // (two redrives answered; of the three bad requests, the unconfirmed one never left the
    // gateway, which checks `confirm` itself).
    let scrape = reqwest::get(&console.metrics_url).await.expect("scrape").text().await.expect("the scrape");
    let readers_f = readers as f64;
    assert_eq!(sample(&scrape, "console_redrives_total", &[("outcome", "redriven")]), Some(readers_f), "{scrape}");
    assert_eq!(sample(&scrape, "console_redrives_total", &[("outcome", "already")]), Some(readers_f), "{scrape}");
    assert_eq!(sample(&scrape, "console_redrives_total", &[("outcome", "refused")]), Some(0.0), "{scrape}");
    let redrives = |status| {
        let labels = [("route", "/console/api/dlq/redrive"), ("method", "POST"), ("status", status)];
        sample(&scrape, "http_requests_total", &labels)
    };
    assert_eq!((redrives("200"), redrives("400")), (Some(2.0), Some(2.0)), "{scrape}");
    assert!(
        sample(&scrape, "http_requests_total", &[("route", "/console/api/dlq"), ("status", "200")])
            .is_some_and(|n| n >= 1.0),
        "{scrape}"
    );

    // Audited: who and which.
    let audit = api.get(&format!("{CONSOLE}/dlq/audit?saga_key={poison_key}"), Some(&admin)).await;
    let rows: Vec<&Value> =
        audit.body.as_array().expect("audit").iter().filter(|r| r["saga_key"] == poison_key.as_str()).collect();
    assert_eq!(rows.len(), readers, "{:?}", audit.body);
    assert!(rows.iter().all(|r| r["admin"] == admin_id.as_str() && r["target_topic"] == topic.as_str()), "{rows:?}");
    // Only that saga's rows, and a query the audit does not take is refused, not ignored.
    assert!(
        audit.body.as_array().expect("audit").iter().all(|r| r["saga_key"] == poison_key.as_str()),
        "{:?}",
        audit.body
    );
    for query in ["saga_key=", "sagakey=x"] {
        let reply = api.get(&format!("{CONSOLE}/dlq/audit?{query}"), Some(&admin)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}: {:?}", reply.body);
    }

    // The redriven copies went through order-events again, where every group reads them
    // (a copy of a message a group had handled is dropped by its inbox; this one is still
    // poison), and came back with the mark of their redrive. The originals now show who
    // redrove them.
    let marked = |l: &Value| l["headers"].as_array().is_some_and(|h| h.iter().any(|h| h[0] == "redriven-from"));
    let letters = eventually("the redriven poison back in the DLQ", || {
        let (api, admin, key) = (api.clone(), admin.clone(), poison_key.clone());
        let letters_of = &letters_of;
        async move {
            let listing = api.get(&format!("{CONSOLE}/dlq"), Some(&admin)).await;
            let letters = letters_of(&listing.body, &key);
            (letters.iter().filter(|l| marked(l)).count() == readers * readers).then_some(letters)
        }
    })
    .await;
    assert_eq!(letters.len(), readers + readers * readers, "{letters:?}");
    assert_eq!(letters.iter().filter(|l| l["redriven"]["by"] == admin_id.as_str()).count(), readers, "{letters:?}");
    assert!(letters.iter().filter(|l| marked(l)).all(|l| l["redriven"].is_null()), "the copies are not redriven yet");

    drop(gateway);
    drop(console);
    saga.shutdown(&stack).await;
}

/// The headers a consumer writes on a dead letter, as if it had read `topic/partition@offset`
/// (the topic as the spec names it, without the test's prefix, as consumers write it).
fn letter_headers(topic: &str, partition: i32, offset: i64, event_type: &str) -> OwnedHeaders {
    let partition = partition.to_string();
    let offset = offset.to_string();
    [
        ("event-type", event_type),
        ("dlq-reason", "permanent"),
        ("dlq-error", "made by hand"),
        ("dlq-original-topic", topic),
        ("dlq-original-partition", partition.as_str()),
        ("dlq-original-offset", offset.as_str()),
        ("dlq-attempts", "1"),
        ("dlq-consumer-group", "saga.order"),
        ("dlq-failed-at", "2026-12-04T00:00:00Z"),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |headers, (key, value)| headers.insert(Header { key, value: Some(value) }))
}

async fn produce(brokers: &str, topic: &str, key: &str, payload: &[u8], headers: OwnedHeaders) -> (i32, i64) {
    let delivery = saga_tests::producer(brokers)
        .send(FutureRecord::to(topic).key(key).payload(payload).headers(headers), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
    (delivery.partition, delivery.offset)
}

/// A participant that may write a dead-letter topic (every consumer of its source topic
/// may) writes a `payment.completed` for an order whose customer never paid. The console
/// lists it as forged and refuses to redrive it, alone or in "redrive all"; an override
/// needs the digest of the exact bytes and a reason, both audited; the order ends as its
/// real events decide, with money and stock where they were.
#[tokio::test]
async fn a_forged_dead_letter_is_refused_and_the_order_ends_as_its_real_events_decide() {
    let stack = saga_tests::stack();
    let (mut saga, console, gateway) = saga_tests::saga::saga_with_console(&stack).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let mut c = saga.clients().await;
    let product = c.product(300, 10).await;
    // A real payment.completed on the topic, for a paying customer's order.
    let payer = c.user(10_000).await;
    let paid = c.order(&payer, &[(&product, 1)]).await;
    c.wait_status(&paid.order_id, "completed").await;
    let payments = saga.topic("payment-events");
    let real = messages_with_key(&saga.brokers, &payments, &paid.order_id);
    let real = real.iter().find(|m| header(m, "event-type").as_deref() == Some("payment.completed")).expect("real");

    // A customer with no money, whose payment waits: the user service is away.
    let broke = c.user(0).await;
    saga.stop("user").await;
    let order = c.order(&broke, &[(&product, 2)]).await;
    c.wait_status(&order.order_id, "inventory_reserved").await;
    let order_id: uuid::Uuid = order.order_id.parse().expect("uuid");
    let user_id: uuid::Uuid = broke.user_id.parse().expect("uuid");
    let forged = Envelope::new(order_id, PaymentCompleted { user_id, amount: Money(600) }).encode().expect("encode");
    let dlq = saga.topic("payment-events.dlq");
    // One letter names a place where payment-events holds nothing, one a real record there.
    let nowhere = produce(
        &saga.brokers,
        &dlq,
        &order.order_id,
        &forged,
        letter_headers("payment-events", 0, 1_000_000, "payment.completed"),
    )
    .await;
    let elsewhere = produce(
        &saga.brokers,
        &dlq,
        &order.order_id,
        &forged,
        letter_headers("payment-events", real.partition(), real.offset(), "payment.completed"),
    )
    .await;
    // And one names another topic than the one its DLQ holds letters of.
    let other_topic = produce(
        &saga.brokers,
        &dlq,
        &order.order_id,
        &forged,
        letter_headers("inventory-events", 0, 0, "payment.completed"),
    )
    .await;
    let ours: Vec<(i32, i64)> = vec![nowhere, elsewhere, other_topic];

    // Listed, each marked forged with why.
    let listing = api.get(&format!("{CONSOLE}/dlq"), Some(&admin)).await;
    assert_eq!(listing.status, StatusCode::OK, "{:?}", listing.body);
    let letters: Vec<Value> = listing.body["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter(|t| t["dlq"] == dlq.as_str())
        .flat_map(|t| t["letters"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(letters.len(), 3, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["provenance"]["verdict"], "forged", "{letter}");
        assert!(letter["value_sha256"].as_str().is_some_and(|d| d.len() == 64), "{letter}");
    }
    let why: Vec<&str> = letters.iter().filter_map(|l| l["provenance"]["why"].as_str()).collect();
    assert!(why.iter().any(|w| w.contains("holds no record")), "{why:?}");
    assert!(why.iter().any(|w| w.contains("another key")), "{why:?}");
    assert!(why.iter().any(|w| w.contains("holds letters of")), "{why:?}");

    // "Redrive all", the ordinary recovery action, and a redrive by name: refused, nothing sent.
    let all = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &json!({ "confirm": true, "all": true })).await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.body["redriven"], json!([]), "{:?}", all.body);
    let mut refused: Vec<(i64, i64)> = all.body["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .filter(|r| r["topic"] == dlq.as_str())
        .map(|r| (r["partition"].as_i64().unwrap_or(-1), r["offset"].as_i64().unwrap_or(-1)))
        .collect();
    refused.sort_unstable();
    assert_eq!(refused, ours.iter().map(|(p, o)| (i64::from(*p), *o)).collect::<Vec<_>>());
    let named = json!({ "confirm": true, "messages": [{ "topic": dlq, "partition": nowhere.0, "offset": nowhere.1 }] });
    let by_name = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &named).await;
    assert_eq!(by_name.status, StatusCode::OK, "{:?}", by_name.body);
    assert_eq!(
        (by_name.body["redriven"].clone(), by_name.body["refused"][0]["provenance"]["verdict"].clone()),
        (json!([]), json!("forged"))
    );
    // The operator's command refuses them too, says why, and fails.
    let cli = std::process::Command::new(stack.binary("saga-tools"))
        .args(["dlq", "redrive", "payment-events", "--prefix", &saga.prefix])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("xtask runs");
    let (out, err) = (String::from_utf8_lossy(&cli.stdout), String::from_utf8_lossy(&cli.stderr));
    assert!(!cli.status.success(), "a redrive of forged letters must fail:\n{out}\n{err}");
    assert!(out.contains("redriven 0 message(s)") && out.contains("3 refused"), "{out}");
    assert_eq!(out.matches("refuse (forged)").count(), 3, "{out}");
    assert!(err.contains("3 dead letter(s) refused"), "{err}");
    // An override names the exact bytes and says why; without either it is refused.
    let digest = letters[0]["value_sha256"].as_str().expect("digest").to_owned();
    let at = |letter: &Value| (letter["partition"].clone(), letter["offset"].clone());
    let (partition, offset) = at(&letters[0]);
    let wrong = "0".repeat(64);
    for (value_sha256, reason) in [(digest.as_str(), " "), (wrong.as_str(), "the publisher lost it")] {
        let request = json!({ "confirm": true, "override": {
            "topic": dlq, "partition": partition, "offset": offset, "value_sha256": value_sha256, "reason": reason } });
        let reply = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    }
    // The console counted each refusal: three in "redrive all", one by name.
    let scrape = reqwest::get(&console.metrics_url).await.expect("scrape").text().await.expect("the scrape");
    assert_eq!(sample(&scrape, "console_redrives_total", &[("outcome", "refused")]), Some(4.0), "{scrape}");
    assert_eq!(sample(&scrape, "console_redrives_total", &[("outcome", "redriven")]), Some(0.0), "{scrape}");
    // Nothing reached payment-events for that order, and it still waits for its payment.
    let sent = messages_with_key(&saga.brokers, &payments, &order.order_id);
    assert!(sent.is_empty(), "{} message(s) on payment-events for the unpaid order", sent.len());
    assert_eq!(c.get_order(&order.order_id).await.status, "inventory_reserved");

    // A harmless forged letter (bytes no consumer can decode) overridden: sent, and audited
    // with its digest and the reason.
    let orders_dlq = saga.topic("order-events.dlq");
    let junk_key = saga_tests::unique("junk");
    let junk = produce(
        &saga.brokers,
        &orders_dlq,
        &junk_key,
        b"junk",
        letter_headers("order-events", 0, 1_000_000, "order.created"),
    )
    .await;
    let listing = api.get(&format!("{CONSOLE}/dlq"), Some(&admin)).await;
    let listed = listing.body["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .flat_map(|t| t["letters"].as_array().cloned().unwrap_or_default())
        .find(|l| l["key"] == junk_key.as_str())
        .expect("the junk letter listed");
    let junk_sha = listed["value_sha256"].as_str().expect("digest").to_owned();
    let request = json!({ "confirm": true, "override": {
        "topic": orders_dlq, "partition": junk.0, "offset": junk.1, "value_sha256": junk_sha,
        "reason": "checked by hand: nothing reads it" } });
    let reply = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &request).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["redriven"].as_array().map(Vec::len), Some(1), "{:?}", reply.body);
    let audit = api.get(&format!("{CONSOLE}/dlq/audit?saga_key={junk_key}"), Some(&admin)).await;
    let row = audit.body.as_array().expect("audit").iter().find(|r| r["saga_key"] == junk_key.as_str()).cloned();
    let row = row.expect("the override audited");
    assert_eq!(
        (&row["provenance"], &row["value_sha256"], &row["override_reason"]),
        (&json!("forged"), &json!(junk_sha), &json!("checked by hand: nothing reads it")),
        "{row}"
    );

    // The user service back: the real payment fails, the order ends payment_failed, the stock
    // comes back, and nobody was charged.
    saga.restart(&stack, "user").await;
    let ended = c.wait_status(&order.order_id, "payment_failed").await;
    assert!(!statuses(&ended).contains(&"completed".to_owned()), "{:?}", statuses(&ended));
    assert_eq!(c.get_user(&broke.user_id).await.balance_minor, 0);
    let stock = saga_tests::saga::eventually("the stock released", || {
        let (mut c, id) = (c.clone(), product.product_id.clone());
        async move {
            let p = c.get_product(&id).await;
            (p.stock_reserved == 1).then_some(p)
        }
    })
    .await;
    assert_eq!((stock.stock_available, stock.stock_reserved), (9, 1), "only the paid order holds stock");
    assert_eq!(c.get_user(&payer.user_id).await.balance_minor, 10_000 - 300);

    drop(gateway);
    drop(console);
    saga.shutdown(&stack).await;
}

/// More letters than a listing shows: "redrive all" sends every one, once, and each saga
/// key's letters in the order their records were first published.
#[tokio::test]
async fn redrive_all_reaches_every_letter_oldest_first_per_saga_key() {
    let stack = saga_tests::stack();
    let (saga, console, gateway) = saga_tests::saga::saga_with_console(&stack).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let topic = saga.topic("order-events");
    let dlq = saga.topic("order-events.dlq");
    let readers =
        saga_generated::topology::CONSUMER_GROUPS.iter().filter(|g| g.topics.contains(&"order-events")).count();
    // Poison (no consumer can decode it) on three keys, each key's in sequence.
    let keys: Vec<String> = (0..3).map(|_| saga_tests::unique("poison")).collect();
    let per_key = 200 / (readers * keys.len()) + 10;
    let producer = saga_tests::producer(&saga.brokers);
    for seq in 0..per_key {
        for key in &keys {
            let payload = format!("poison {seq:04}");
            producer
                .send(FutureRecord::to(&topic).key(key).payload(payload.as_bytes()), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("poison produced");
        }
    }
    let expected = per_key * keys.len() * readers;
    assert!(expected > 200, "more letters than a listing shows");
    eventually("every poison dead-lettered by every reader", || {
        let (api, admin, dlq) = (api.clone(), admin.clone(), dlq.clone());
        async move {
            let listing = api.get(&format!("{CONSOLE}/dlq"), Some(&admin)).await;
            let total =
                listing.body["topics"].as_array()?.iter().find(|t| t["dlq"] == dlq.as_str())?["total"].as_u64()?;
            (total as usize == expected).then_some(())
        }
    })
    .await;

    let all = api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &json!({ "confirm": true, "all": true })).await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.body);
    assert_eq!(all.body["redriven"].as_array().map(Vec::len), Some(expected));
    assert_eq!(all.body["refused"], json!([]));
    let again =
        api.post(&format!("{CONSOLE}/dlq/redrive"), Some(&admin), &json!({ "confirm": true, "all": true })).await;
    let again_sent = again.body["redriven"].as_array().map(Vec::len).unwrap_or(usize::MAX);
    // Only letters written since (the copies, poison again) are new; none of the first ones is sent twice.
    let first: std::collections::BTreeSet<String> =
        all.body["redriven"].as_array().into_iter().flatten().map(Value::to_string).collect();
    assert!(again.body["redriven"].as_array().into_iter().flatten().all(|l| !first.contains(&l.to_string())));
    assert!(again_sent <= expected * readers, "{again_sent}");

    // On the topic, each key's copies came back in publication order.
    let copies = saga_tests::saga::messages_with_keys(
        &saga.brokers,
        &topic,
        &keys.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for key in &keys {
        let sequence: Vec<String> = copies
            .iter()
            .filter(|m| {
                m.key() == Some(key.as_bytes()) && header(m, "redriven-from").is_some_and(|f| f.starts_with(&dlq))
            })
            .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            .collect();
        assert!(sequence.len() >= per_key * readers, "{key}: {} copies", sequence.len());
        let first_round = &sequence[..per_key * readers];
        assert!(first_round.windows(2).all(|w| w[0] <= w[1]), "{key}: out of order: {first_round:?}");
    }

    drop(gateway);
    drop(console);
    saga.shutdown(&stack).await;
}

/// The console stopped (SIGTERM) while an admin follows the overview through the gateway:
/// the stream ends with `reconnect`, passed through, and the console exits cleanly within
/// the bound instead of waiting on the stream.
#[tokio::test]
async fn a_stopping_console_ends_its_streams_with_reconnect_and_exits_within_the_bound() {
    let stack = saga_tests::stack();
    let (saga, console, gateway) = saga_tests::saga::saga_with_console(&stack).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let mut response = api
        .http
        .get(api.url(&format!("{CONSOLE}/overview/stream")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("overview stream");
    assert_eq!(response.status(), StatusCode::OK);
    let mut text = String::new();
    while !parse_sse(&text).iter().any(|(name, _)| name == "overview") {
        let chunk = response.chunk().await.expect("chunk").expect("the stream goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let bound = Duration::from_secs(saga_process::shutdown::DEFAULT_GRACE_SECS);
    let stopping = tokio::spawn(console.terminate(bound + Duration::from_secs(5)));
    while let Some(chunk) = response.chunk().await.expect("the stream ends cleanly") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = parse_sse(&text);
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("reconnect"), "{events:?}");
    let (status, took) = stopping.await.expect("terminate");
    assert!(status.is_some_and(|s| s.success()), "the console did not exit cleanly: {status:?} after {took:?}");
    assert!(took < bound, "the console took {took:?} to stop");
    drop(gateway);
    saga.shutdown(&stack).await;
}
