//! A TCP forwarder between Sluice and a store that the test can shut and
//! open again on the same port. Shut, it refuses every connection and cuts
//! the open ones: to the client, the store is down.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct Gate {
    pub addr: SocketAddr,
    backend: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Gate {
    /// Opens a gate to `backend` on a port of its own.
    pub async fn open_to(backend: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            addr: listener.local_addr().unwrap(),
            backend,
            task: Mutex::new(None),
        };
        gate.serve(listener);
        gate
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let backend = self.backend;
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every
            // connection it forwards.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Shuts the gate: the listener closes and open connections are cut.
    pub async fn shut(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Opens the gate again on the same port.
    pub async fn open(&self) {
        let deadline = std::time::Instant::now() + super::PATIENCE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "cannot bind {}: {e}",
                        self.addr
                    );
                    // The port is still being released: a bounded retry of
                    // the bind, not a wait for something to happen.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }
}
