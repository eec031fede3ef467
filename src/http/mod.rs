//! The REST adapter: KServe v2 / Open Inference Protocol over HTTP/JSON,
//! Triton's statistics, binary tensor data, model configuration, model
//! repository and logging extensions, v1 predict, and `/metrics`.
//!
//! Handlers decode, call [`crate::service::Service`], and encode; they hold
//! no inference logic. Layers, bottom up: the stateless wire formats
//! ([`codec`]), the error mapping (`error`) and body extractor (`body`), the
//! handlers (`routes`, `repository`, `v1`, `logging`), the route table with
//! each route's scope (`router`) behind the edge policy (`guard`), and the
//! connection loop ([`serve`]).

mod app;
mod body;
pub mod codec;
mod config;
mod error;
mod guard;
mod logging;
mod parse_errors;
mod path;
mod repository;
mod router;
mod routes;
pub(crate) mod serve;
mod state;
mod v1;

pub(crate) use app::App;
pub use config::{BodyLimits, HttpConfig};
pub(crate) use guard::Guard;
pub use router::paths;
pub(crate) use router::{app, metrics_app};
