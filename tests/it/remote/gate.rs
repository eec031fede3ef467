//! A TCP forwarder between Sluice and a store that the test can shut and
//! open again. Shut, it closes every connection it accepts before a byte
//! passes and cuts the open ones: to the client, the store is down. The
//! listener itself stays, so opening again needs no new bind.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub struct Gate {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gate {
    /// Opens a gate to `backend` on a port of its own.
    pub async fn open_to(backend: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, state) = watch::channel(true);
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every
            // connection it forwards.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = state.clone();
                if !*state.borrow_and_update() {
                    continue; // shut: the connection is dropped unanswered
                }
                connections.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(backend).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|open| !*open) => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Gate { addr, open, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the gate: open connections are cut, new ones closed at once.
    pub async fn shut(&self) {
        self.open.send_replace(false);
    }

    /// Opens the gate again.
    pub async fn open(&self) {
        self.open.send_replace(true);
    }
}
