//! `GET /v1/whoami`: who the token speaks for (the console shows admin-only filters by it).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, Params, only, params};
use crate::config::Principal;

/// The answer of `GET /v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    /// `admin` or `tenant`.
    pub principal: String,
    /// The tenant of a tenant token; `null` for admin.
    pub tenant: Option<String>,
}

pub async fn whoami(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: Params,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers)?;
    only(&params(q)?, &[])?;
    Ok(Json(WhoAmI {
        principal: match who {
            Principal::Admin => "admin".into(),
            Principal::Tenant(_) => "tenant".into(),
        },
        tenant: who.scope().map(str::to_string),
    })
    .into_response())
}
