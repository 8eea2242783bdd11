//! Admin operations on users.

use axum::Json;
use axum::extract::{Path, State};
use saga_proto::user as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::balance::Idempotence;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, Validate, parse_id};
use crate::routes::products::{MAX_AMOUNT, reference_problem};
use crate::session::Admin;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    /// Amount to add in minor units (cents), more than 0.
    #[schema(example = 10000, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount_minor: i64,
    /// Idempotency reference (e.g. a payment id): the same reference with the
    /// same amount credits once; with another amount, 409. When absent, every
    /// request is a new credit.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub reference: Option<String>,
}

impl Validate for Credit {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if !(1..=MAX_AMOUNT).contains(&self.amount_minor) {
            fields.push(FieldError::new("amount_minor", format!("must be between 1 and {MAX_AMOUNT}")));
        }
        if let Some(problem) = self.reference.as_deref().and_then(reference_problem) {
            fields.push(FieldError::new("reference", problem));
        }
        fields
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditResult {
    /// Balance after the credit, in minor units.
    pub balance_minor: i64,
    pub ledger_entry_id: String,
    /// False when this reference had been applied before (nothing changed now).
    pub applied: bool,
}

/// Fund a user's balance (admin).
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/credit", tag = "admin", request_body = Credit,
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Credited (or already credited under this reference)", body = CreditResult),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The reference was used for another credit", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
pub async fn credit(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Credit>,
) -> Result<Json<CreditResult>, ApiError> {
    let id = parse_id("id", &id)?;
    let reference = body.reference.unwrap_or_else(|| format!("gateway-{}", uuid::Uuid::new_v4()));
    let request =
        pb::CreditBalanceRequest { user_id: id.to_string(), amount_minor: body.amount_minor, reference_id: reference };
    let reply = state
        .backends
        .user_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.credit_balance(r).await })
        .await?
        .into_inner();
    tracing::info!(admin = %admin.session.user_id, user_id = %id, amount_minor = body.amount_minor, applied = reply.applied, "balance credited");
    Ok(Json(CreditResult {
        balance_minor: reply.balance_minor,
        ledger_entry_id: reply.ledger_entry_id,
        applied: reply.applied,
    }))
}
