//! Who may read: with `API_TOKEN` set, the stats routes, a site's settings
//! (`/sites/{site_id}/goals`, read and write) and `/metrics` require
//! `Authorization: Bearer <API_TOKEN>` (`/health`, for load balancers, does not).
//! Which sites may send events is ingestion's rule (`ALLOWED_SITES`).

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Config;

/// The API's token, from `API_TOKEN`.
#[derive(Debug, Default)]
pub struct ApiToken {
    /// Required as `Authorization: Bearer …` by the stats routes and `/metrics` when set.
    pub token: Option<String>,
}

impl ApiToken {
    /// The token a configuration asks for.
    pub fn from_config(config: &Config) -> ApiToken {
        ApiToken { token: config.api_token.clone() }
    }

    /// Checks the `Authorization` header against the token, in constant time.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else { return Ok(()) };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) { Ok(()) } else { Err(ApiError::Unauthorized) }
    }
}
