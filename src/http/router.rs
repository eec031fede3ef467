//! The REST API as one table: every route, its handlers and the scope it
//! needs. The edge policy runs per route with that scope, so access is
//! declared here and never derived from path prefixes.

use super::app::{App, Direct, INFER, INFER_VERSION};
use super::guard::{Guard, guard};
use super::state::AppState;
use super::{logging, repository, routes, v1};
use crate::auth::Access;
use crate::logging::LogControl;
use crate::service::Service;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, any, get, post};

/// One route: its path (axum syntax), handlers and scope.
struct Route {
    path: &'static str,
    handlers: MethodRouter<AppState>,
    access: Access,
}

fn route(path: &'static str, handlers: MethodRouter<AppState>, access: Access) -> Route {
    Route {
        path,
        handlers,
        access,
    }
}

/// Every route of the REST API.
fn table() -> Vec<Route> {
    use Access::{Admin, Health, Infer, Metrics};
    vec![
        route("/v2/health/live", get(routes::live), Health),
        route("/v2/health/ready", get(routes::ready), Health),
        route("/v2", get(routes::server_metadata), Infer),
        route("/v2/models/stats", get(routes::all_stats), Infer),
        route("/v2/models/{model}", get(routes::model_metadata), Infer),
        route(
            "/v2/models/{model}/versions/{version}",
            get(routes::model_metadata_v),
            Infer,
        ),
        route("/v2/models/{model}/ready", get(routes::model_ready), Infer),
        route(
            "/v2/models/{model}/versions/{version}/ready",
            get(routes::model_ready_v),
            Infer,
        ),
        route(INFER, post(routes::infer), Infer),
        route(INFER_VERSION, post(routes::infer_v), Infer),
        route("/v2/models/{model}/stats", get(routes::model_stats), Infer),
        route(
            "/v2/models/{model}/versions/{version}/stats",
            get(routes::model_stats_v),
            Infer,
        ),
        route("/v2/models/{model}/config", get(repository::config), Infer),
        route(
            "/v2/models/{model}/versions/{version}/config",
            get(repository::config_v),
            Infer,
        ),
        route("/v2/repository/index", post(repository::index), Admin),
        route(
            "/v2/repository/models/{model}/load",
            post(repository::load),
            Admin,
        ),
        route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
            Admin,
        ),
        route(
            "/v2/logging",
            get(logging::get).post(logging::update),
            Admin,
        ),
        // axum cannot capture `{m}:predict`; the handler splits on ':'.
        route("/v1/models/{model_action}", post(v1::action), Infer),
        route("/metrics", get(routes::metrics), Metrics),
    ]
}

/// Builds the app of `routes`, each behind the edge policy with its own
/// scope; anything else is a 404 behind the `infer` scope. When `routes`
/// has both inference routes with one scope, they are matched in front of
/// the router (see [`super::app`]) with that scope.
fn build(routes: Vec<Route>, state: AppState, guard_config: Guard, body_limit: usize) -> App {
    let scope = |path: &str| routes.iter().find(|r| r.path == path).map(|r| r.access);
    let direct = match (scope(INFER), scope(INFER_VERSION)) {
        (Some(access), Some(versioned)) if access == versioned => Some(Direct {
            state: state.clone(),
            guard: guard_config.clone(),
            access,
            metrics: guard_config.edge.metrics.clone(),
        }),
        _ => None,
    };
    let layer = |access: Access| {
        axum::middleware::from_fn_with_state(
            std::sync::Arc::new((guard_config.clone(), access)),
            guard,
        )
    };
    let mut router = Router::new();
    for r in routes {
        let handlers = r
            .handlers
            .fallback(routes::method_not_allowed)
            .layer(layer(r.access));
        router = router.route(r.path, handlers);
    }
    let metrics = guard_config.edge.metrics.clone();
    let router = router
        .fallback_service(any(routes::not_found).layer(layer(Access::Infer)))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            super::guard::catch_panic,
        ))
        .with_state(state);
    App::new(router, direct)
}

/// The whole REST API, each route behind the edge policy.
pub(crate) fn app(service: Service, guard: Guard, logging: LogControl) -> App {
    let limit = guard.max_body_bytes;
    let state = AppState {
        service,
        logging,
        max_body_bytes: limit,
    };
    build(table(), state, guard, limit)
}

/// `/metrics` alone, for `--metrics-port` (behind the same policy).
pub(crate) fn metrics_app(service: Service, guard: Guard) -> App {
    let state = AppState {
        service,
        logging: LogControl::detached(),
        max_body_bytes: 0,
    };
    let routes = table()
        .into_iter()
        .filter(|r| r.path == "/metrics")
        .collect();
    build(routes, state, guard, 0)
}

/// Every path of the REST API with its scope, for documentation checks.
pub fn paths() -> Vec<(&'static str, Access)> {
    table().into_iter().map(|r| (r.path, r.access)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_declare_their_scope() {
        let scope = |path: &str| {
            paths()
                .into_iter()
                .find(|(p, _)| *p == path)
                .map(|(_, a)| a)
        };
        assert_eq!(scope("/v2/health/ready"), Some(Access::Health));
        assert_eq!(scope("/metrics"), Some(Access::Metrics));
        assert_eq!(scope("/v2/repository/index"), Some(Access::Admin));
        assert_eq!(scope("/v2/logging"), Some(Access::Admin));
        assert_eq!(scope("/v2/models/{model}/infer"), Some(Access::Infer));
        assert_eq!(scope("/v1/models/{model_action}"), Some(Access::Infer));
    }
}
