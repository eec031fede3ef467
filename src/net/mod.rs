//! Connection admission, shared by every listener: accept, cap the number of
//! open connections, complete the TLS handshake (with a deadline), and hand
//! the connection to a protocol adapter.
//!
//! One accept task per listener owns the socket. It never waits on a client:
//! each connection gets its own task that completes the TLS handshake (if
//! any) and waits for the client's first bytes, both within
//! [`NetConfig::handshake_timeout`]. A client that connects and sends
//! nothing (slow loris) therefore holds a connection slot for at most that
//! long and never blocks the accept loop; after that, hyper's header-read
//! timeout bounds each request head. The first bytes are kept and replayed
//! to the protocol, which sees the stream untouched. Ready connections go
//! through a bounded channel to the adapter's serve loop.
//!
//! Once serving, a connection closes after [`NetConfig::idle_timeout`] with no
//! request in progress on it. The protocol adapters mark each request (from
//! its head to the end of its response body) with [`Activity::begin`]; the
//! connection's reads end (as if the client had closed) when the timer runs
//! out. HTTP/2 keep-alive pings keep a dead peer from holding a slot, but
//! only this closes a live one that sends nothing: on HTTP/2 and gRPC a
//! connection is otherwise never idle at the socket.
//!
//! The connection cap is a semaphore shared by all listeners. A permit rides
//! inside [`Conn`] and is returned when the connection drops, however it ends.
//! Over the cap, a plain-HTTP listener answers one `503` with `Retry-After`
//! and closes; TLS and gRPC listeners close at once (there is no protocol in
//! which to say more before a handshake).

mod accept;
mod config;
mod conn;
mod idle;
pub mod metrics;
mod ratelimit;
pub mod tls;

pub(crate) use accept::{Acceptor, incoming};
pub use config::{Kind, NetConfig};
pub(crate) use conn::{Conn, ConnectionLimit};
pub(crate) use idle::{Activity, Busy};
