//! The operator console in a real browser (headless Chromium), on a real private saga through
//! a real gateway: a customer is turned away, an admin logs in, follows a saga live from a
//! waiting state to `completed` on the spec's diagram, and redrives a poison message from the
//! DLQ view. Screenshots of each step are saved under `<state>/artifacts/`.

use std::time::Duration;

use fantoccini::Locator;
use rdkafka::producer::FutureRecord;
use reqwest::StatusCode;
use saga_generated::OrderStatus;
use saga_tests::browser::Browser;
use saga_tests::saga::eventually;
use serde_json::json;

/// The page's message line, as a script expression.
const MESSAGE: &str = "document.getElementById('message').textContent";

#[tokio::test]
async fn an_admin_follows_a_saga_and_redrives_a_dead_letter_in_the_browser() {
    let stack = saga_tests::stack();
    let (mut saga, console, gateway) = saga_tests::saga::saga_with_console(&stack).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let admin_id = api.get("/api/v1/me", Some(&admin)).await.body["id"].as_str().expect("admin id").to_owned();
    let (admin_email, admin_password) = saga_stack::admin_credentials();
    let (customer_email, customer_password, customer_id) = api.register_customer().await;
    let customer = api.login(&customer_email, &customer_password).await;
    let product = api.create_product(&admin, 500, 10).await;
    api.credit(&admin, &customer_id, 10_000).await;

    let browser = Browser::start(&stack).await;
    browser.client.goto(&api.url("/console")).await.expect("open the console");
    let log_in = |email: String, password: String| {
        let browser = &browser;
        async move {
            browser.until("the login form", "return !document.getElementById('login-view').hidden").await;
            browser.type_into("email", &email).await;
            browser.type_into("password", &password).await;
            browser.click(Locator::Id("login-button")).await;
        }
    };

    // A customer logs in and is turned away: no data, a clear message.
    log_in(customer_email.clone(), customer_password.clone()).await;
    let refused =
        browser.until("the customer refused", &format!("return {MESSAGE}.startsWith('Forbidden') && {MESSAGE}")).await;
    assert!(refused.as_str().is_some_and(|m| m.contains("admins only")), "{refused}");
    assert_eq!(browser.eval("return document.querySelectorAll('#statuses tr').length").await, 0, "no data shown");
    browser.screenshot("console-customer-refused").await;
    browser.click(Locator::Id("logout")).await;

    // An admin logs in: the overview, every status of the spec, updated live.
    log_in(admin_email.to_owned(), admin_password.to_owned()).await;
    let rows = OrderStatus::ALL.len() + 1;
    browser.until("the overview", &format!("return document.querySelectorAll('#statuses tr').length === {rows}")).await;
    let statuses = browser
        .eval("return [...document.querySelectorAll('#statuses tr td:first-child')].map(td => td.textContent)")
        .await;
    assert_eq!(statuses, json!(OrderStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()));
    let first = browser.until("an overview time", "return document.getElementById('updated').textContent.startsWith('updated') && document.getElementById('updated').textContent").await;
    browser
        .until(
            "the overview updated without a reload",
            &format!("return document.getElementById('updated').textContent !== {first}"),
        )
        .await;
    assert_eq!(browser.eval(&format!("return {MESSAGE}")).await, "", "no error shown");
    // Each service's health beside it, as the gateway sees it: API and saga pipeline fine.
    let services = browser
        .until(
            "every service's health",
            "const rows = [...document.querySelectorAll('#services tr')].slice(1).map(tr => [...tr.cells].map(td => td.textContent)); \
             return rows.length === 3 && rows.every(([, word]) => word === 'ok') && rows.map(([service]) => service).join(',')",
        )
        .await;
    assert_eq!(services, "order,product,user");

    // A saga that must wait: the user service is away, so it stops at inventory_reserved.
    saga.stop("user").await;
    let placed = api.place_order(&customer, "browser-1", &json!([{ "product_id": product, "quantity": 2 }])).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order_id = placed.body["id"].as_str().expect("order id").to_owned();
    eventually("the order waiting in inventory_reserved", || {
        let (api, customer, path) = (api.clone(), customer.clone(), format!("/api/v1/orders/{order_id}"));
        async move { (api.get(&path, Some(&customer)).await.body["status"] == "inventory_reserved").then_some(()) }
    })
    .await;
    browser.click(Locator::Id("nav-saga")).await;
    browser.type_into("order-id", &order_id).await;
    browser.click(Locator::Id("saga-show")).await;
    let current = "document.querySelector('#diagram svg .state.current')?.dataset.state";
    browser
        .until(
            "the saga waiting, highlighted",
            &format!(
                "return document.getElementById('saga-status')?.textContent === 'inventory_reserved' \
                 && {current} === 'inventory_reserved'"
            ),
        )
        .await;
    let possible = browser
        .eval(
            "return [...document.querySelectorAll('#diagram svg .transition.possible')].map(t => t.dataset.to).sort()",
        )
        .await;
    assert!(possible.as_array().is_some_and(|p| p.iter().any(|t| t == "paid")), "{possible}");
    browser
        .until(
            "the timeout with the time left",
            "return [...document.querySelectorAll('#next .timeout-left')].some(li => / in \\d+\\.\\d s$/.test(li.textContent))",
        )
        .await;
    let timeline = browser.eval("return document.getElementById('timeline').textContent").await;
    assert!(timeline.as_str().is_some_and(|t| t.contains("stock.reduction.success")), "{timeline}");
    browser.screenshot("console-saga-waiting").await;

    // The user service comes back: the same page advances to completed by itself.
    saga.restart(&stack, "user").await;
    browser
        .until(
            "the saga completed, live",
            &format!(
                "return document.getElementById('saga-status')?.textContent === 'completed' \
                 && {current} === 'completed' \
                 && document.getElementById('next').textContent.includes('Nothing comes next')"
            ),
        )
        .await;
    let timeline = browser.eval("return document.getElementById('timeline').textContent").await;
    assert!(
        timeline.as_str().is_some_and(|t| t.contains("inventory_reserved → paid on payment.completed")
            && t.contains("paid → completed on shipment.booked")),
        "{timeline}"
    );
    browser.screenshot("console-saga-completed").await;

    // A malformed id and an unknown one get a clear message.
    browser.type_into("order-id", "not-an-id").await;
    browser.click(Locator::Id("saga-show")).await;
    browser.until("the malformed id refused", &format!("return {MESSAGE}.includes('is not an order id')")).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    browser.type_into("order-id", &unknown).await;
    browser.click(Locator::Id("saga-show")).await;
    browser.until("the unknown id reported", &format!("return {MESSAGE} === 'no order {unknown}'")).await;
    browser.screenshot("console-saga-unknown").await;

    // A poison message appears in the DLQ view and is redriven, after a confirmation.
    let poison_key = saga_tests::unique("poison");
    saga_tests::producer(&saga.brokers)
        .send(
            FutureRecord::to(&saga.topic("order-events")).key(&poison_key).payload(b"not an event".as_slice()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("poison produced");
    browser.click(Locator::Id("nav-dlq")).await;
    let poison_row = format!("//tr[contains(@class, 'letter')][td[text()='{poison_key}']]");
    browser
        .until(
            "the poison in the DLQ view",
            &format!(
                "document.getElementById('dlq-refresh').click(); \
                 return document.evaluate(\"{poison_row}\", document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null).snapshotLength > 0"
            ),
        )
        .await;
    let redrive = format!("({poison_row}//button[contains(@class, 'redrive')])[1]");
    browser.click(Locator::XPath(&redrive)).await;
    browser.until("the confirmation", "return !document.getElementById('confirm-box').hidden").await;
    browser.screenshot("console-dlq-confirm").await;
    browser.click(Locator::Id("confirm-yes")).await;
    browser.until("the redrive reported", &format!("return {MESSAGE}.startsWith('Redriven: 1;')")).await;
    browser
        .until(
            "the letter marked redriven by the admin",
            &format!(
                "return document.evaluate(\"{poison_row}/td[contains(@class, 'redriven')][contains(., '{admin_id}')]\", \
                 document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE, null).snapshotLength === 1"
            ),
        )
        .await;
    browser.screenshot("console-dlq-redriven").await;

    // Audited, as the API tells too.
    let audit = api.get(&format!("/api/v1/admin/console/dlq/audit?saga_key={poison_key}"), Some(&admin)).await;
    assert_eq!(audit.status, StatusCode::OK, "{:?}", audit.body);
    let ours: Vec<_> =
        audit.body.as_array().expect("audit rows").iter().filter(|r| r["saga_key"] == poison_key.as_str()).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["admin"], admin_id.as_str());

    // Back on the overview: the completed saga and the dead letters are counted.
    browser.click(Locator::Id("nav-overview")).await;
    browser
        .until(
            "the overview counting the saga and the dead letters",
            "const cells = (id) => [...document.querySelectorAll(`#${id} tr`)].map(r => [...r.cells].map(c => c.textContent)); \
             return cells('statuses').some(([s, n]) => s === 'completed' && n === '1') \
                 && cells('dlq-counts').some(([t, n]) => t.endsWith('order-events.dlq') && Number(n) > 0)",
        )
        .await;
    browser.screenshot("console-overview").await;

    browser.close().await;
    drop(gateway);
    drop(console);
    saga.shutdown(&stack).await;
}
