//! gRPC API of the user service.

use chrono::{DateTime, Utc};
use saga_proto::user::user_service_server::UserService;
use saga_proto::user::{
    CreateUserRequest, CreditBalanceRequest, CreditBalanceResponse, GetUserRequest, Role, User,
    VerifyCredentialsRequest, VerifyCredentialsResponse,
};
use saga_runtime::db::{self, PoolName};
use saga_runtime::grpc::{database, is_constraint, parse_uuid, timestamp};
use sqlx::{FromRow, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::password::{dummy_hash, hash_password, verify_password};

pub struct UserApi {
    pub pool: PgPool,
}

#[derive(FromRow)]
struct UserRow {
    user_id: Uuid,
    email: String,
    display_name: String,
    role: String,
    balance_minor: i64,
    created_at: DateTime<Utc>,
}

fn role_name(role: Role) -> Option<&'static str> {
    match role {
        Role::Customer => Some("customer"),
        Role::Admin => Some("admin"),
        Role::Unspecified => None,
    }
}

fn role_of(name: &str) -> Role {
    match name {
        "admin" => Role::Admin,
        "customer" => Role::Customer,
        _ => Role::Unspecified,
    }
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            user_id: r.user_id.to_string(),
            email: r.email,
            display_name: r.display_name,
            role: role_of(&r.role) as i32,
            balance_minor: r.balance_minor,
            created_at: timestamp(r.created_at),
        }
    }
}

const SELECT: &str = "SELECT u.user_id, u.email, u.display_name, u.role, b.balance_minor, u.created_at \
                      FROM users u JOIN balances b USING (user_id)";

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let r = request.into_inner();
        let email = r.email.trim().to_owned();
        if email.len() > 320 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
            return Err(Status::invalid_argument("email is not a valid address"));
        }
        if r.password.is_empty() {
            return Err(Status::invalid_argument("password must not be empty"));
        }
        let role = role_name(Role::try_from(r.role).unwrap_or(Role::Unspecified))
            .ok_or_else(|| Status::invalid_argument("role must be customer or admin"))?;
        if r.initial_balance_minor < 0 {
            return Err(Status::invalid_argument("initial_balance_minor must not be negative"));
        }
        let display_name =
            if r.display_name.trim().is_empty() { email.clone() } else { r.display_name.trim().to_owned() };
        let hash = hash_password(r.password).await?;
        let id = Uuid::now_v7();
        let mut tx = db::begin(&self.pool, PoolName::Api).await.map_err(database)?;
        let inserted = sqlx::query("INSERT INTO users (user_id, email, display_name, role) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(&email)
            .bind(&display_name)
            .bind(role)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_constraint(&e, "users_email") => {
                return Err(Status::already_exists("a user with this email exists"));
            }
            other => other.map_err(database)?,
        };
        sqlx::query("INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)")
            .bind(id)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        sqlx::query("INSERT INTO balances (user_id, balance_minor) VALUES ($1, $2)")
            .bind(id)
            .bind(r.initial_balance_minor)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        if r.initial_balance_minor > 0 {
            sqlx::query(
                "INSERT INTO ledger (entry_id, user_id, kind, amount_minor, balance_after_minor, reference) \
                 VALUES ($1, $2, 'opening', $3, $3, $4)",
            )
            .bind(Uuid::now_v7())
            .bind(id)
            .bind(r.initial_balance_minor)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        }
        let row: UserRow = sqlx::query_as(&format!("{SELECT} WHERE u.user_id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(database)?;
        tx.commit().await.map_err(database)?;
        tracing::info!(user_id = %id, "user created");
        Ok(Response::new(row.into()))
    }

    async fn verify_credentials(
        &self,
        request: Request<VerifyCredentialsRequest>,
    ) -> Result<Response<VerifyCredentialsResponse>, Status> {
        let r = request.into_inner();
        let row: Option<(Uuid, String, String, String)> = sqlx::query_as(
            "SELECT u.user_id, u.role, u.display_name, c.password_hash FROM users u JOIN credentials c USING (user_id) \
             WHERE lower(u.email) = lower($1)",
        )
        .bind(r.email.trim())
        .fetch_optional(&mut *db::acquire(&self.pool, PoolName::Api).await.map_err(database)?)
        .await
        .map_err(database)?;
        let denied = || Status::unauthenticated("wrong email or password");
        let Some((user_id, role, display_name, hash)) = row else {
            // Hash anyway, so an unknown email takes as long as a wrong
            // password and response times do not reveal who has an account.
            let _ = verify_password(&r.email, r.password, dummy_hash().await?.to_owned()).await?;
            return Err(denied());
        };
        if !verify_password(&r.email, r.password, hash).await? {
            return Err(denied());
        }
        Ok(Response::new(VerifyCredentialsResponse {
            user_id: user_id.to_string(),
            role: role_of(&role) as i32,
            display_name,
        }))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = parse_uuid("user_id", &request.into_inner().user_id)?;
        let row: Option<UserRow> = sqlx::query_as(&format!("{SELECT} WHERE u.user_id = $1"))
            .bind(id)
            .fetch_optional(&mut *db::acquire(&self.pool, PoolName::Api).await.map_err(database)?)
            .await
            .map_err(database)?;
        row.map(|r| Response::new(r.into())).ok_or_else(|| Status::not_found(format!("no user {id}")))
    }

    async fn credit_balance(
        &self,
        request: Request<CreditBalanceRequest>,
    ) -> Result<Response<CreditBalanceResponse>, Status> {
        let r = request.into_inner();
        let id = parse_uuid("user_id", &r.user_id)?;
        if r.amount_minor <= 0 {
            return Err(Status::invalid_argument("amount_minor must be positive"));
        }
        if r.reference_id.is_empty() || r.reference_id.chars().count() > 200 {
            return Err(Status::invalid_argument("reference_id is required (1..=200 characters)"));
        }
        // Scoped by user, so two users' references never collide.
        let reference = format!("{id}:{}", r.reference_id);
        let mut tx = db::begin(&self.pool, PoolName::Api).await.map_err(database)?;
        let balance: Option<i64> =
            sqlx::query_scalar("SELECT balance_minor FROM balances WHERE user_id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(database)?;
        let Some(balance) = balance else {
            return Err(Status::not_found(format!("no user {id}")));
        };
        // Under the balance row lock, so a concurrent retry sees the first credit.
        let previous: Option<(Uuid, i64)> =
            sqlx::query_as("SELECT entry_id, amount_minor FROM ledger WHERE kind = 'credit' AND reference = $1")
                .bind(&reference)
                .fetch_optional(&mut *tx)
                .await
                .map_err(database)?;
        if let Some((entry, amount)) = previous {
            // A retry repeats the amount; another amount is another credit
            // under a reference already spent, which must not pass as done.
            if amount != r.amount_minor {
                return Err(Status::already_exists(format!(
                    "reference {:?} was used for a credit of {amount}",
                    r.reference_id
                )));
            }
            return Ok(Response::new(CreditBalanceResponse {
                balance_minor: balance,
                ledger_entry_id: entry.to_string(),
                applied: false,
            }));
        }
        let after = balance.checked_add(r.amount_minor).ok_or_else(|| Status::invalid_argument("balance overflow"))?;
        let entry = Uuid::now_v7();
        sqlx::query("UPDATE balances SET balance_minor = $2, updated_at = now() WHERE user_id = $1")
            .bind(id)
            .bind(after)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        sqlx::query(
            "INSERT INTO ledger (entry_id, user_id, kind, amount_minor, balance_after_minor, reference) \
             VALUES ($1, $2, 'credit', $3, $4, $5)",
        )
        .bind(entry)
        .bind(id)
        .bind(r.amount_minor)
        .bind(after)
        .bind(&reference)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        tx.commit().await.map_err(database)?;
        tracing::info!(user_id = %id, amount = r.amount_minor, "balance credited");
        Ok(Response::new(CreditBalanceResponse {
            balance_minor: after,
            ledger_entry_id: entry.to_string(),
            applied: true,
        }))
    }
}
