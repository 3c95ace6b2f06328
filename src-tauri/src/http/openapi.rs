//! OpenAPI: the frame of the API's OpenAPI 3 document (title, tags, the bearer
//! token scheme, the error body and the error responses the routes share).
//!
//! The paths come from the handlers' `#[utoipa::path]` attributes, gathered by
//! the route table in [`crate::http`], which builds the router from the same list:
//! a route cannot be served without being documented, nor documented without
//! being served. `GET /openapi.json` serves the result.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::ErrorBody;

/// The name of the bearer token scheme in the document (`API_TOKEN`); the routes'
/// `security(("api_token" = []))` attributes name it literally (a macro needs a literal).
pub const API_TOKEN_SCHEME: &str = "api_token";

/// The document's frame; [`crate::http::openapi()`] adds the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Analytics Desk",
        description = "Local web analytics: send events, read each site's exact stats. Every error is a JSON \
                       `{\"error\": \"…\"}` naming what is wrong. With `API_TOKEN` set, the stats, goals and metrics \
                       routes require `Authorization: Bearer <API_TOKEN>`; without it they are open (the \
                       service then only listens on loopback)."
    ),
    modifiers(&BearerToken),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            HostNotAllowed,
            RequestTimeout,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unavailable,
            StatsTimeLimit
        )
    ),
    tags(
        (name = "ingestion", description = "Sending events: the tracker script, one event, or a batch."),
        (name = "stats", description = "Reading a site's exact figures."),
        (name = "sites", description = "A site's settings: its goals."),
        (name = "operations", description = "Health, metrics and this document.")
    )
)]
pub struct ApiDoc;

/// Adds the `API_TOKEN` bearer scheme.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The server's `API_TOKEN`, when it has one: `Authorization: Bearer <API_TOKEN>`."))
            .build();
        openapi.components.get_or_insert_default().add_security_scheme(API_TOKEN_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The body or query is not acceptable; the message says which field and why.
#[derive(ToResponse)]
pub struct BadRequest(pub ErrorBody);

/// `API_TOKEN` is set and the request lacks `Authorization: Bearer <API_TOKEN>`
/// (the answer carries `WWW-Authenticate: Bearer`).
#[derive(ToResponse)]
pub struct Unauthorized(pub ErrorBody);

/// The site is not in the server's `ALLOWED_SITES`.
#[derive(ToResponse)]
pub struct Forbidden(pub ErrorBody);

/// Without `API_TOKEN` (or with `PUBLIC_HOSTS` set), the stats routes, `/metrics`
/// and this document answer only requests whose `Host` is a loopback name
/// (`localhost`, `*.localhost`), an IP address, or a name in `PUBLIC_HOSTS`: a
/// page whose name was made to resolve to this machine (DNS rebinding) cannot read them.
#[derive(ToResponse)]
pub struct HostNotAllowed(pub ErrorBody);

/// The body stalled (no data for 10 seconds) or took longer than its deadline in
/// all (`BODY_DEADLINE_SECS`, 30 seconds by default). Nothing was stored.
#[derive(ToResponse)]
pub struct RequestTimeout(pub ErrorBody);

/// The body is over the route's size limit (or a batch holds too many events). Nothing was stored.
#[derive(ToResponse)]
pub struct PayloadTooLarge(pub ErrorBody);

/// The `Content-Type` is neither JSON nor `text/plain`.
#[derive(ToResponse)]
pub struct UnsupportedMediaType(pub ErrorBody);

/// The database cannot be reached (answered within a few seconds), the server is at its
/// limit of requests in flight (answered at once), or it is shutting down. Nothing was
/// stored; retry shortly.
#[derive(ToResponse)]
pub struct Unavailable(pub ErrorBody);

/// A stats query ran past its time limit (`maxTimeMS`): the database stopped its work.
/// Narrow the range (`from`/`to`) or retry later.
#[derive(ToResponse)]
pub struct StatsTimeLimit(pub ErrorBody);
