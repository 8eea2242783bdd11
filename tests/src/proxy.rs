//! A TCP proxy a test can cut, to give a client a real outage of the server
//! behind it (connections reset, new ones refused) without stopping a server
//! the rest of the suite shares.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accepting: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    down: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.down.load(Ordering::SeqCst) {
                    drop(client); // the outage: accepted and closed at once
                    continue;
                }
                let forward = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                shared.connections.lock().expect("lock").push(forward.abort_handle());
            }
        });
        Proxy { addr, state, accepting }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The outage starts: every open connection is cut, new ones are closed at once.
    pub fn cut(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        for connection in self.state.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    /// The outage ends: new connections go through again.
    pub fn restore(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}
