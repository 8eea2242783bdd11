//! The user service's part of the saga: debit only when the balance
//! suffices, a ledger row per change, refund exactly once on cancellation or
//! a failed shipment.

use saga_generated::handlers::{UserHandler, UserOnOrderCancelled, UserOnShipmentFailed, UserOnStockReductionSuccess};
use saga_generated::types::PaymentFailure;
use saga_generated::{
    Envelope, Money, OrderCancelled, PaymentCompleted, PaymentFail, PaymentRefunded, ShipmentFailed,
    StockReductionSuccess,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::sql;

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("negative amount {0} in an event")]
    NegativeAmount(i64),
}

/// An outage of the database is waited out; a negative amount in an event is a permanent verdict.
impl saga_contract::Classify for BalanceError {
    fn class(&self) -> saga_contract::FailureClass {
        match self {
            BalanceError::Db(e) => saga_runtime::db::class_of(e),
            BalanceError::NegativeAmount(_) => saga_contract::FailureClass::Permanent,
        }
    }
}

pub struct UserSaga;

async fn ledger(
    conn: &mut PgConnection,
    user_id: Uuid,
    kind: &str,
    amount: i64,
    after: i64,
    order_id: Uuid,
) -> Result<(), sqlx::Error> {
    if amount == 0 {
        return Ok(()); // a free order moves no money
    }
    sqlx::query(sql::LEDGER)
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(kind)
        .bind(amount)
        .bind(after)
        .bind(order_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

impl UserHandler for UserSaga {
    type Ctx = PgConnection;
    type Error = BalanceError;

    async fn on_stock_reduction_success(
        &self,
        conn: &mut PgConnection,
        event: Envelope<StockReductionSuccess>,
    ) -> Result<UserOnStockReductionSuccess, Self::Error> {
        let order_id = event.order_id;
        let user_id = event.payload.user_id;
        let amount = event.payload.amount.minor();
        if amount < 0 {
            return Err(BalanceError::NegativeAmount(amount));
        }
        let known: Option<String> =
            sqlx::query_scalar(sql::PAYMENT_STATUS).bind(order_id).fetch_optional(&mut *conn).await?;
        if let Some(status) = known {
            // Debited or failed before, or cancelled before the request came: never debit twice or late.
            tracing::info!(%status, "payment already decided");
            return Ok(UserOnStockReductionSuccess::NoReply);
        }
        let balance: Option<i64> =
            sqlx::query_scalar(sql::LOCK_BALANCE).bind(user_id).fetch_optional(&mut *conn).await?;
        let failure = match balance {
            None => Some((PaymentFailure::UnknownUser, format!("no user {user_id}"))),
            Some(b) if b < amount => {
                Some((PaymentFailure::InsufficientBalance, format!("balance {b} is less than the amount {amount}")))
            }
            Some(_) => None,
        };
        if let Some((reason, detail)) = failure {
            sqlx::query(sql::REFUSE)
                .bind(order_id)
                .bind(user_id)
                .bind(amount)
                .bind(reason.as_str())
                .execute(&mut *conn)
                .await?;
            tracing::info!(reason = reason.as_str(), %detail, "payment refused");
            return Ok(UserOnStockReductionSuccess::PaymentFail(PaymentFail { reason, detail }));
        }
        let after: i64 = sqlx::query_scalar(sql::DEBIT).bind(user_id).bind(amount).fetch_one(&mut *conn).await?;
        ledger(conn, user_id, "debit", -amount, after, order_id).await?;
        sqlx::query(sql::DEBITED).bind(order_id).bind(user_id).bind(amount).execute(&mut *conn).await?;
        tracing::info!(amount, balance_after = after, "balance debited");
        Ok(UserOnStockReductionSuccess::PaymentCompleted(PaymentCompleted { user_id, amount: Money(amount) }))
    }

    async fn on_order_cancelled(
        &self,
        conn: &mut PgConnection,
        event: Envelope<OrderCancelled>,
    ) -> Result<UserOnOrderCancelled, Self::Error> {
        let order_id = event.order_id;
        // Tombstone first: a payment request that arrives after the
        // cancellation (another topic, so no ordering) then debits nothing.
        sqlx::query(sql::CANCEL).bind(order_id).execute(&mut *conn).await?;
        Ok(match refund(conn, order_id).await? {
            Some(refunded) => UserOnOrderCancelled::PaymentRefunded(refunded),
            None => UserOnOrderCancelled::NoReply,
        })
    }

    async fn on_shipment_failed(
        &self,
        conn: &mut PgConnection,
        event: Envelope<ShipmentFailed>,
    ) -> Result<UserOnShipmentFailed, Self::Error> {
        // No tombstone: a failed shipment follows the debit it undoes, which this
        // service published itself.
        Ok(match refund(conn, event.order_id).await? {
            Some(refunded) => UserOnShipmentFailed::PaymentRefunded(refunded),
            None => UserOnShipmentFailed::NoReply,
        })
    }
}

/// Gives a debit back, exactly once: only a `debited` payment is refunded, and it moves
/// to `refunded` (the row lock serialises a concurrent compensation).
async fn refund(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<PaymentRefunded>, BalanceError> {
    let debited: Option<(Option<Uuid>, i64)> =
        sqlx::query_as(sql::REFUND).bind(order_id).fetch_optional(&mut *conn).await?;
    let Some((Some(user_id), amount)) = debited else {
        tracing::info!("nothing debited to refund");
        return Ok(None);
    };
    let after: i64 = sqlx::query_scalar(sql::CREDIT).bind(user_id).bind(amount).fetch_one(&mut *conn).await?;
    ledger(conn, user_id, "refund", amount, after, order_id).await?;
    tracing::info!(amount, balance_after = after, "payment refunded");
    Ok(Some(PaymentRefunded { user_id, amount: Money(amount) }))
}
