//! Who a request is, from its headers alone, before any body is read: a request to an
//! endpoint that needs a token and does not carry a valid one is refused at once (a
//! trickled body holds nothing), and its connection is closed. A connection whose
//! requests showed a valid token (a caller's, an agent's, the admin's, the importer's)
//! is marked proven; the listener gives connections that are not a short budget and
//! closes them first when the slots run out. The handlers keep their own checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Set once a request on the connection showed a valid token; shared between the
/// listener's connection and the requests it serves (as a request extension).
#[derive(Clone, Default)]
pub(crate) struct Proven(Arc<AtomicBool>);

impl Proven {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Whose token an endpoint needs, by its path.
enum Needs {
    Caller,
    Agent,
    Admin,
    /// The import API checks its own token from the headers before reading its
    /// (streamed) multipart body; here it is only recognised.
    Importer,
    Nothing,
}

fn needs(path: &str) -> Needs {
    if path.starts_with("/v1/") {
        Needs::Caller
    } else if path.starts_with("/admin/support/") {
        Needs::Agent
    } else if path.starts_with("/admin/") {
        Needs::Admin
    } else if path.starts_with("/api/v2/") {
        Needs::Importer
    } else {
        Needs::Nothing
    }
}

fn holds_any_token(app: &AppState, headers: &HeaderMap) -> bool {
    app.callers.authenticate(headers).is_ok()
        || app.agents.authenticate(headers).is_ok()
        || (app.admin_token.is_some()
            && super::admin_api::refuse_unless_admin(app, headers).is_none())
        || app
            .import_api
            .as_ref()
            .is_some_and(|api| api.holds_token(headers))
}

/// The middleware (`router` layers it over every route).
pub(super) async fn admit(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let proven = request.extensions().get::<Proven>().cloned();
    let headers = request.headers();
    let refused = |refusal: Response| (Some(refusal), false);
    let (refusal, shown) = match needs(request.uri().path()) {
        Needs::Caller => match app.callers.authenticate(headers) {
            Ok(_) => (None, true),
            Err(e) => refused(e.into_response()),
        },
        Needs::Agent => match app.agents.authenticate(headers) {
            Ok(_) => (None, true),
            Err(e) => refused(e.into_response()),
        },
        Needs::Admin => match super::admin_api::refuse_unless_admin(&app, headers) {
            None => (None, true),
            Some(refusal) => refused(refusal),
        },
        Needs::Importer => (
            None,
            app.import_api
                .as_ref()
                .is_some_and(|api| api.holds_token(headers)),
        ),
        // Health checks and metrics need no token; one that comes with a valid token
        // (a gateway checking its pooled connections) still proves the connection.
        Needs::Nothing => (
            None,
            headers.contains_key(header::AUTHORIZATION) && holds_any_token(&app, headers),
        ),
    };
    if let Some(mut refusal) = refusal {
        // It had to show a token with this request: the connection ends here.
        refusal
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return refusal;
    }
    if shown && let Some(proven) = &proven {
        proven.set();
    }
    let mut response = next.run(request).await;
    // A refusal further in (the import API's) ends a connection that proved nothing.
    if response.status() == StatusCode::UNAUTHORIZED && proven.is_some_and(|p| !p.get()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
