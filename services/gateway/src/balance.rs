//! A backend service's instances behind one gRPC channel: calls are spread
//! over the instances that answer (tonic's power-of-two-choices balancer over
//! a changing endpoint list), and a call that could not reach an instance is
//! retried on another.
//!
//! The instances are the addresses the configured URLs resolve to, resolved
//! again every [`RESOLVE_EVERY`]: a list of instances (`http://127.0.0.1:17051,
//! http://127.0.0.1:17251`), a name per instance, or one name that stands for
//! all of them (a headless Kubernetes Service) all work.
//! Each instance has a watcher that asks its gRPC health service every
//! [`WATCH_EVERY`]: an instance that does not answer (killed, restarting) is
//! taken out of the list, and put back once it answers again. Its health as
//! a whole (`""`) says whether its own API can serve (its database answers):
//! an instance that says NOT_SERVING is taken out too while another instance
//! of the service serves, and kept while none does (each then answers
//! UNAVAILABLE itself, at once, rather than no instance being called). A stuck
//! saga pipeline (`saga.pipeline`: a broker outage, a stuck relay) leaves the
//! API serving, so it steers nothing; the watcher notes it for `/readyz`
//! ([`Instances::check`]), which only reports it.
//! Between an instance dying and its watcher noticing, calls that hit it fail
//! at the connection: [`retry`] sends those again, with a short backoff, so
//! a client sees nothing of a replica going away.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use saga_proto::tls::TlsFiles;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How often each instance's health is asked.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// How long one health question or connection attempt may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// TCP keepalive of every connection to an instance: after this much silence
/// a probe, then one every third of it, three times, so a connection to a
/// host that vanished without closing it (the order change feed's long
/// calls, an idle channel) is found dead in about a minute, not in the
/// system's two hours.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Attempts of one call at most, and the wait before the second (doubling):
/// 50 + 100 + 200 + 400 + 800 ms outlast a watcher taking a dead instance out.
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// How often each configured address is resolved again: a name may stand for
/// several instances (a headless Kubernetes Service), which come and go.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// The instances of one service, their channel and what their watchers see.
#[derive(Clone)]
pub struct Instances {
    pub service: &'static str,
    /// Balances over the instances that answer.
    pub channel: Channel,
    /// The instances known now, by their URL (`http://<ip>:<port>`).
    members: Members,
    /// Mutual TLS with every instance (its certificate issued for the
    /// service's name), or none: `https://` URLs, or `http://` ones.
    tls: Option<ClientTlsConfig>,
}

/// One instance: a channel of its own (for health questions and calls meant
/// for it alone, such as the order change feed's), what its watcher
/// last saw ([`NOT_ASKED`], [`SERVES`], [`NOT_SERVING`] or [`SILENT`]), its
/// health as `/readyz` reports it, and the watcher.
struct Member {
    channel: Channel,
    seen: Arc<AtomicU8>,
    check: Arc<Mutex<String>>,
    watcher: tokio::task::JoinHandle<()>,
}

const NOT_ASKED: u8 = 0;
/// It answers, and its API serves.
const SERVES: u8 = 1;
const SILENT: u8 = 2;
/// It answers, and says its API cannot serve (its database is away).
const NOT_SERVING: u8 = 3;

/// The instances known now, by URL.
type Members = Arc<Mutex<BTreeMap<String, Member>>>;

impl Instances {
    /// Parses `urls` (comma-separated) and keeps the instances they stand for:
    /// every address each one's host resolves to, resolved again every
    /// [`RESOLVE_EVERY`], with a watcher per instance. Connections are lazy: an
    /// instance that is down only stays out of the list until it answers.
    pub fn start(service: &'static str, urls: &str, tls: Option<&TlsFiles>) -> anyhow::Result<Instances> {
        let urls: Vec<String> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        anyhow::ensure!(!urls.is_empty(), "no gRPC URL for the {service} service");
        let mut targets = Vec::with_capacity(urls.len());
        for url in &urls {
            let uri: tonic::codegen::http::Uri =
                url.parse().with_context(|| format!("invalid gRPC URL for {service}: {url}"))?;
            let host = uri.host().with_context(|| format!("gRPC URL for {service} without a host: {url}"))?;
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let scheme = uri.scheme_str().unwrap_or("http").to_owned();
            // Either way round, a mismatch would be a call that cannot work,
            // or one that silently goes out in plaintext.
            match (scheme.as_str(), tls.is_some()) {
                ("https", false) => anyhow::bail!(
                    "{service}: {url} is https, but the gateway has no GRPC_TLS_CA, GRPC_TLS_CERT and GRPC_TLS_KEY"
                ),
                ("http", true) => anyhow::bail!(
                    "{service}: {url} is plaintext http, but the gateway is configured for mutual TLS; use https://"
                ),
                _ => {}
            }
            targets.push((scheme, host.trim_matches(['[', ']']).to_owned(), port));
        }
        let (channel, changes) = Channel::balance_channel::<String>(64);
        let tls = tls.map(|files| files.client(service)).transpose()?;
        let instances = Instances { service, channel, members: Arc::default(), tls };
        tokio::spawn(instances.clone().resolve(targets, changes));
        Ok(instances)
    }

    /// Resolves every target now and every [`RESOLVE_EVERY`]; starts a watcher
    /// for each new address and stops (and unlists) those that went away. A
    /// name that does not resolve for a while keeps the addresses it had.
    async fn resolve(self, targets: Vec<(String, String, u16)>, changes: Sender<Change<String, Endpoint>>) {
        let mut known: Vec<Vec<String>> = vec![Vec::new(); targets.len()];
        loop {
            for (i, (scheme, host, port)) in targets.iter().enumerate() {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addresses) => {
                        let mut urls: Vec<String> = addresses.map(|a| format!("{scheme}://{a}")).collect();
                        urls.sort();
                        urls.dedup();
                        known[i] = urls;
                    }
                    Err(error) => {
                        tracing::warn!(service = self.service, %host, %error, "cannot resolve a backend address")
                    }
                }
            }
            self.reconcile(known.iter().flatten().cloned().collect(), &changes);
            tokio::time::sleep(RESOLVE_EVERY).await;
        }
    }

    /// Starts a watcher for each instance of `wanted` not known yet, and stops
    /// (and unlists) the known ones that are not wanted any more.
    fn reconcile(&self, wanted: BTreeSet<String>, changes: &Sender<Change<String, Endpoint>>) {
        let mut members = self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<String> = members.keys().filter(|u| !wanted.contains(*u)).cloned().collect();
        for url in gone {
            if let Some(member) = members.remove(&url) {
                member.watcher.abort();
                tracing::info!(service = self.service, %url, "instance no longer resolved; no calls go to it");
                let _ = changes.try_send(Change::Remove(url));
            }
        }
        for url in &wanted {
            if members.contains_key(url) {
                continue;
            }
            let Ok(mut endpoint) = Endpoint::from_shared(url.clone()) else { continue };
            if let Some(tls) = &self.tls {
                endpoint = match endpoint.tls_config(tls.clone()) {
                    Ok(endpoint) => endpoint,
                    Err(error) => {
                        tracing::error!(service = self.service, %url, %error, "cannot set up TLS to an instance");
                        continue;
                    }
                };
            }
            let endpoint = endpoint
                .connect_timeout(ASK_TIMEOUT)
                .tcp_keepalive(Some(TCP_KEEPALIVE))
                .tcp_keepalive_interval(Some(TCP_KEEPALIVE / 3))
                .tcp_keepalive_retries(Some(3));
            let own = endpoint.connect_lazy();
            let seen = Arc::new(AtomicU8::new(NOT_ASKED));
            let check = Arc::new(Mutex::new("not asked yet".to_owned()));
            let watcher = Watcher {
                service: self.service,
                url: url.clone(),
                endpoint,
                seen: seen.clone(),
                check: check.clone(),
                members: self.members.clone(),
            };
            let watcher = tokio::spawn(watcher.run(own.clone(), changes.clone()));
            members.insert(url.clone(), Member { channel: own, seen, check, watcher });
        }
    }

    /// The instances known now: each one's URL, its own channel (calls on it
    /// go to that instance only) and whether its watcher last heard it answer.
    pub fn members(&self) -> Vec<(String, Channel, bool)> {
        let members = self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        members
            .iter()
            .map(|(url, m)| {
                (url.clone(), m.channel.clone(), matches!(m.seen.load(Ordering::Relaxed), SERVES | NOT_SERVING))
            })
            .collect()
    }

    /// True when every instance was asked and none answered: a call would wait
    /// in the balancer for one to come back (until its deadline), so it fails at once.
    pub fn none_answers(&self) -> bool {
        let members = self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        !members.is_empty() && members.values().all(|m| m.seen.load(Ordering::Relaxed) == SILENT)
    }

    /// What the service's instances say, as `/readyz` lists it (for
    /// information: the gateway's readiness does not depend on it): `ok`
    /// when an instance's API serves with its pipeline flowing, else the
    /// best any instance says (see [`crate::routes::health::describe`]); and
    /// each instance's own word, as its watcher last heard it.
    pub fn check(&self) -> (String, Vec<(String, String)>) {
        let each: Vec<(String, String)> = {
            let members = self.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            members
                .iter()
                .map(|(url, m)| {
                    (url.clone(), m.check.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
                })
                .collect()
        };
        let overall = if each.iter().any(|(_, c)| c == "ok") {
            "ok".to_owned()
        } else if let Some((_, serving)) = each.iter().find(|(_, c)| c.starts_with("ok")) {
            serving.clone()
        } else if each.is_empty() {
            "unresolved".to_owned()
        } else {
            let checks: Vec<&str> = each.iter().map(|(_, c)| c.as_str()).collect();
            checks.join("; ")
        };
        (overall, each)
    }
}

/// One instance's watcher.
struct Watcher {
    service: &'static str,
    url: String,
    endpoint: Endpoint,
    seen: Arc<AtomicU8>,
    check: Arc<Mutex<String>>,
    /// Every instance of the service: whether another one serves.
    members: Members,
}

impl Watcher {
    /// Asks the instance's health every [`WATCH_EVERY`] (over `own`, its own
    /// channel) and keeps it in the balancer's list while it answers and its
    /// API serves, or answers while no instance's API serves.
    async fn run(self, own: Channel, changes: Sender<Change<String, Endpoint>>) {
        let Watcher { service, url, endpoint, seen, check, members } = self;
        let client = HealthClient::new(own);
        let mut in_list = false;
        let mut last = NOT_ASKED;
        loop {
            let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
            request.set_timeout(ASK_TIMEOUT);
            let now = match tokio::time::timeout(ASK_TIMEOUT, client.clone().check(request)).await {
                Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32 => SERVES,
                Ok(Ok(_)) => NOT_SERVING,
                _ => SILENT,
            };
            seen.store(now, Ordering::Relaxed);
            let described = match now {
                SILENT => "unreachable".to_owned(),
                _ => crate::routes::health::describe(&client, now == SERVES).await,
            };
            *check.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = described;
            let another_serves = {
                let members = members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                members.iter().any(|(u, m)| *u != url && m.seen.load(Ordering::Relaxed) == SERVES)
            };
            let wanted = match now {
                SERVES => true,
                NOT_SERVING => !another_serves,
                _ => false,
            };
            if wanted != in_list {
                let change =
                    if wanted { Change::Insert(url.clone(), endpoint.clone()) } else { Change::Remove(url.clone()) };
                if changes.send(change).await.is_err() {
                    // The channel is gone: the gateway is shutting down.
                    return;
                }
                in_list = wanted;
            }
            if now != last {
                match now {
                    SERVES => tracing::info!(service, %url, "instance serves; calls go to it"),
                    NOT_SERVING if wanted => tracing::warn!(service, %url,
                        "instance answers that its API cannot serve, and so do the others; calls still go to it"),
                    NOT_SERVING => tracing::warn!(service, %url,
                        "instance answers that its API cannot serve; calls go to the instances that do"),
                    _ => tracing::warn!(service, %url, "instance does not answer; no calls go to it until it does"),
                }
                last = now;
            }
            metrics::gauge!(INSTANCE_IN_ROTATION, "service" => service, "instance" => url.clone()).set(if in_list {
                1.0
            } else {
                0.0
            });
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }
}

/// What a call gets when no instance answers: like a refused connection, so
/// it is tried again (an instance may be back within the retries).
pub fn no_instance(service: &str) -> tonic::Status {
    let message = format!("no instance of the {service} service answers");
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, message.clone());
    let mut status = tonic::Status::unavailable(message);
    status.set_source(Arc::new(refused));
    status
}

/// Whether a call's parameters make it safe to send twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotence {
    /// A read, or a write that carries its own key (an order's idempotency
    /// key, a credit's or stock change's reference): sent again whenever the
    /// instance could not be reached or the connection broke.
    Idempotent,
    /// A write that would happen twice (a new user, a new product): sent again
    /// only when it never left the gateway (the connection was refused).
    Once,
}

/// Calls `call` until it succeeds, fails with an answer of the service, or
/// [`ATTEMPTS`] attempts failed to reach an instance.
pub async fn retry<T, Fut>(
    service: &'static str,
    idempotence: Idempotence,
    mut call: impl FnMut() -> Fut,
) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if attempt < ATTEMPTS && unreached(&status, idempotence) => {
                tracing::debug!(service, attempt, error = %status, "no instance reached; calling again");
                metrics::counter!(CALLS_RETRIED, "service" => service).increment(1);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// What a failed call's status says happened to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The service answered with this status (UNAVAILABLE included: a service
    /// whose database is away says so itself). A status decoded from the
    /// service's answer has no error behind it.
    Answer,
    /// The call's own deadline passed (tonic's `TimeoutExpired`).
    Deadline,
    /// The call never reached the service: the connection was refused, the
    /// stream refused, or it was above the last stream an instance going away
    /// said it would handle (GOAWAY).
    NeverSent,
    /// The connection or stream broke under the call (reset, closed, hyper
    /// cancelling what it had queued): the service may have handled it.
    Broken,
}

impl Failure {
    /// Reads the error the client put behind `status`, if any.
    pub fn of(status: &tonic::Status) -> Failure {
        let mut source = std::error::Error::source(status);
        if source.is_none() {
            return Failure::Answer;
        }
        while let Some(error) = source {
            if error.is::<tonic::TimeoutExpired>() {
                return Failure::Deadline;
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return Failure::NeverSent;
            }
            if let Some(h2) = error.downcast_ref::<h2::Error>()
                && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)))
            {
                return Failure::NeverSent;
            }
            source = error.source();
        }
        Failure::Broken
    }
}

/// Whether `status` says the call never reached a working instance, or broke
/// on its way, so that it may go to another: a call that may have been
/// handled goes again only when it is idempotent.
fn unreached(status: &tonic::Status, idempotence: Idempotence) -> bool {
    match Failure::of(status) {
        Failure::Answer | Failure::Deadline => false,
        Failure::NeverSent => true,
        Failure::Broken => idempotence == Idempotence::Idempotent,
    }
}

/// Gauge: 1 while an instance gets calls, 0 while it is out of the list.
pub const INSTANCE_IN_ROTATION: &str = "gateway_backend_instance_in_rotation";
/// Counter: calls sent again to another instance.
pub const CALLS_RETRIED: &str = "gateway_backend_calls_retried_total";

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(kind: std::io::ErrorKind) -> tonic::Status {
        let mut status = tonic::Status::unavailable("transport error");
        status.set_source(Arc::new(std::io::Error::new(kind, "socket")));
        status
    }

    #[test]
    fn only_calls_that_reached_no_instance_are_sent_again() {
        use Idempotence::{Idempotent, Once};
        // Refused: it never left, whatever the call.
        let refused = transport(std::io::ErrorKind::ConnectionRefused);
        assert!(unreached(&refused, Idempotent) && unreached(&refused, Once), "{refused:?}");
        // Reset midway: it may have been handled; only an idempotent call goes again.
        let reset = transport(std::io::ErrorKind::ConnectionReset);
        assert!(unreached(&reset, Idempotent) && !unreached(&reset, Once), "{reset:?}");
        // The service's own answers, UNAVAILABLE included (its database is away).
        assert!(!unreached(&tonic::Status::unavailable("the service's database is unavailable"), Idempotent));
        assert!(!unreached(&tonic::Status::not_found("no such order"), Idempotent));
        let none = no_instance("order");
        assert_eq!(none.code(), tonic::Code::Unavailable);
        assert!(unreached(&none, Once), "nothing was sent");
        // The connection closed under the call (an instance shutting down):
        // CANCELLED with the client's error behind it, sent again when idempotent.
        let mut closed = tonic::Status::cancelled("operation was canceled");
        closed.set_source(Arc::new(std::io::Error::other("connection closed")));
        assert!(unreached(&closed, Idempotent) && !unreached(&closed, Once), "{closed:?}");
        // A stream the instance refused was never handled, whatever the call.
        let mut refused_stream = tonic::Status::unavailable("h2 protocol error");
        refused_stream.set_source(Arc::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert!(unreached(&refused_stream, Once), "{refused_stream:?}");
        // Reset with another reason (INTERNAL to the client): it may have been handled.
        let mut reset_stream = tonic::Status::internal("h2 protocol error: http2 error");
        reset_stream.set_source(Arc::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert!(unreached(&reset_stream, Idempotent) && !unreached(&reset_stream, Once), "{reset_stream:?}");
        // The call's own deadline passed: not sent again, the time is up.
        let mut expired = tonic::Status::cancelled("Timeout expired");
        expired.set_source(Arc::new(tonic::TimeoutExpired(())));
        assert!(!unreached(&expired, Idempotent), "{expired:?}");
        assert_eq!(Failure::of(&expired), Failure::Deadline);
        assert_eq!(Failure::of(&tonic::Status::cancelled("by the service")), Failure::Answer);
    }

    /// A health server on a free loopback port that also says SERVING for
    /// `name` (so a call tells which instance answered); its reporter sets
    /// its overall status.
    async fn health_server(name: &str) -> (u16, tonic_health::server::HealthReporter, tokio::task::JoinHandle<()>) {
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let port = incoming.local_addr().expect("addr").port();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder().add_service(health).serve_with_incoming(incoming).await;
        });
        (port, reporter, server)
    }

    /// Which instances, `first` or `second`, answer `tries` calls through the balanced channel.
    async fn answering(instances: &Instances, tries: usize) -> BTreeSet<&'static str> {
        let mut seen = BTreeSet::new();
        for _ in 0..tries {
            let reply = HealthClient::new(instances.channel.clone())
                .check(HealthCheckRequest { service: "first".to_owned() })
                .await;
            seen.insert(match reply {
                Ok(_) => "first",
                Err(status) if status.code() == tonic::Code::NotFound => "second",
                Err(status) => panic!("no instance answered: {status}"),
            });
        }
        seen
    }

    /// An instance whose API cannot serve (its overall health NOT_SERVING: its
    /// database is away) gets no calls while another instance serves, and gets
    /// them again when none does: each then answers for itself.
    #[tokio::test]
    async fn an_instance_that_cannot_serve_gets_no_calls_while_another_serves() {
        let (first, first_reporter, first_server) = health_server("first").await;
        let (second, second_reporter, second_server) = health_server("second").await;
        second_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let urls = format!("http://127.0.0.1:{first},http://127.0.0.1:{second}");
        let instances = Instances::start("order", &urls, None).expect("instances");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while instances.check().1.iter().any(|(_, check)| check == "not asked yet") {
            assert!(tokio::time::Instant::now() < deadline, "never asked: {:?}", instances.check());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(answering(&instances, 40).await, BTreeSet::from(["first"]), "only the serving one is called");
        let (overall, each) = instances.check();
        assert_eq!(overall, "ok");
        let second_url = format!("http://127.0.0.1:{second}");
        assert!(each.iter().any(|(url, check)| *url == second_url && check == "not serving: saga.api"), "{each:?}");

        // Neither serves: both are called again, and answer for themselves.
        first_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answers = answering(&instances, 40).await;
            if answers == BTreeSet::from(["first", "second"]) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{answers:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // One serves again: the other is out again.
        second_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answers = answering(&instances, 40).await;
            if answers == BTreeSet::from(["second"]) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{answers:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first_server.abort();
        second_server.abort();
    }

    /// A name stands for every address it resolves to: `localhost` is found as
    /// the instance listening on 127.0.0.1 (any other address of it, such as
    /// `::1`, does not answer and stays out).
    #[tokio::test]
    async fn a_name_is_resolved_to_its_instances() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let server = tokio::spawn(tonic::transport::Server::builder().add_service(health).serve(address));
        let instances = Instances::start("order", &format!("http://localhost:{port}"), None).expect("instances");
        let expected = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (overall, each) = instances.check();
            if overall == "ok" {
                assert!(each.iter().any(|(url, check)| *url == expected && check == "ok"), "{each:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never found: {each:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!instances.none_answers());
        server.abort();
    }

    #[tokio::test]
    async fn a_call_is_sent_again_until_an_instance_answers() {
        let mut calls = 0;
        let answer = retry("order", Idempotence::Idempotent, || {
            calls += 1;
            let outcome =
                if calls < 3 { Err(transport(std::io::ErrorKind::ConnectionRefused)) } else { Ok("answered") };
            async move { outcome }
        })
        .await;
        assert_eq!((answer.ok(), calls), (Some("answered"), 3));
        let mut calls = 0;
        let answer: Result<(), _> = retry("order", Idempotence::Idempotent, || {
            calls += 1;
            async { Err(tonic::Status::invalid_argument("bad")) }
        })
        .await;
        assert_eq!((answer.map_err(|s| s.code()), calls), (Err(tonic::Code::InvalidArgument), 1));
    }
}
