//! The catalogue: public reads, admin writes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use saga_proto::product as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::balance::Idempotence;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, ApiQuery, Validate, parse_id};
use crate::session::Admin;
use crate::state::AppState;

/// Upper bound of prices, stock and stock changes: far beyond any real value,
/// low enough that sums of them cannot overflow an i64.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct Product {
    #[schema(value_type = uuid::Uuid)]
    pub id: String,
    pub name: String,
    pub description: String,
    /// Price of one unit in minor units (cents).
    pub price_minor: i64,
    /// Units that can still be ordered.
    pub stock_available: i64,
    /// Units held by orders in flight or completed.
    pub stock_reserved: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<pb::Product> for Product {
    fn from(p: pb::Product) -> Product {
        Product {
            id: p.product_id,
            name: p.name,
            description: p.description,
            price_minor: p.price_minor,
            stock_available: p.stock_available,
            stock_reserved: p.stock_reserved,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Paging of list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(max_length = 512)]
    pub page_token: Option<String>,
}

impl Validate for PageQuery {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if let Some(size) = self.page_size
            && !(1..=100).contains(&size)
        {
            fields.push(FieldError::new("page_size", "must be between 1 and 100"));
        }
        if self.page_token.as_ref().is_some_and(|t| t.len() > 512) {
            fields.push(FieldError::new("page_token", "must be at most 512 characters"));
        }
        fields
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(example = "Espresso cup", min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Price of one unit in minor units (cents), 0 or more.
    #[schema(example = 1250, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_minor: i64,
    /// Units in stock at creation (default 0).
    #[serde(default)]
    #[schema(example = 10, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub initial_stock: Option<i64>,
}

fn check_name(fields: &mut Vec<FieldError>, name: &str) {
    if name.trim().is_empty() {
        fields.push(FieldError::new("name", "must not be blank"));
    } else if name.chars().count() > 200 {
        fields.push(FieldError::new("name", "must be at most 200 characters"));
    } else if name.chars().any(char::is_control) {
        fields.push(FieldError::new("name", "must not contain control characters"));
    }
}

fn check_description(fields: &mut Vec<FieldError>, description: Option<&String>) {
    if description.is_some_and(|d| d.chars().count() > 2000) {
        fields.push(FieldError::new("description", "must be at most 2000 characters"));
    }
}

fn check_amount(fields: &mut Vec<FieldError>, field: &str, value: Option<i64>) {
    if let Some(value) = value
        && !(0..=MAX_AMOUNT).contains(&value)
    {
        fields.push(FieldError::new(field, format!("must be between 0 and {MAX_AMOUNT}")));
    }
}

impl Validate for CreateProduct {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        check_name(&mut fields, &self.name);
        check_description(&mut fields, self.description.as_ref());
        check_amount(&mut fields, "price_minor", Some(self.price_minor));
        check_amount(&mut fields, "initial_stock", self.initial_stock);
        fields
    }
}

/// Only the fields present change; at least one is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_minor: Option<i64>,
}

impl Validate for UpdateProduct {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if self.name.is_none() && self.description.is_none() && self.price_minor.is_none() {
            fields.push(FieldError::new("body", "must set at least one of name, description, price_minor"));
        }
        if let Some(name) = &self.name {
            check_name(&mut fields, name);
        }
        check_description(&mut fields, self.description.as_ref());
        check_amount(&mut fields, "price_minor", self.price_minor);
        fields
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockChange {
    /// Units to add (> 0) or remove (< 0); never 0.
    #[schema(schema_with = nonzero_delta)]
    pub delta: i64,
    /// Optional idempotency reference: the same reference with the same change
    /// changes the stock once; with another change, or on another product, 409.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub reference: Option<String>,
}

/// What is wrong with an idempotency reference (of a stock change or a
/// credit), if anything: what the schema says, counted in characters as
/// JSON Schema counts them; control characters (PostgreSQL's text cannot
/// hold NUL) are refused.
pub fn reference_problem(reference: &str) -> Option<&'static str> {
    if reference.is_empty() || reference.chars().count() > 200 {
        Some("must be 1 to 200 characters")
    } else if reference.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}

/// `delta` as the validation sees it: a non-zero integer within ±[`MAX_AMOUNT`].
fn nonzero_delta() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
    let range = |minimum: i64, maximum: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(minimum))
            .maximum(Some(maximum))
            .build()
    };
    let either = OneOfBuilder::new()
        .item(range(1, MAX_AMOUNT))
        .item(range(-MAX_AMOUNT, -1))
        .description(Some("Units to add (> 0) or remove (< 0); never 0."))
        .examples([5]);
    Schema::OneOf(either.build())
}

impl Validate for StockChange {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if self.delta == 0 {
            fields.push(FieldError::new("delta", "must not be 0"));
        } else if self.delta.unsigned_abs() > MAX_AMOUNT as u64 {
            fields.push(FieldError::new("delta", format!("must be between -{MAX_AMOUNT} and {MAX_AMOUNT}")));
        }
        if let Some(problem) = self.reference.as_deref().and_then(reference_problem) {
            fields.push(FieldError::new("reference", problem));
        }
        fields
    }
}

/// List products, ordered by id.
#[utoipa::path(get, path = "/api/v1/products", tag = "products", params(PageQuery),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = 400, description = "Invalid paging", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let request = pb::ListProductsRequest {
        page_size: query.page_size.unwrap_or(0),
        page_token: query.page_token.unwrap_or_default(),
    };
    let reply = state
        .backends
        .product_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.list_products(r).await })
        .await?
        .into_inner();
    Ok(Json(ProductPage {
        items: reply.products.into_iter().map(Product::from).collect(),
        next_page_token: Some(reply.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// One product.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products",
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
    ))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Product>, ApiError> {
    let id = parse_id("id", &id)?;
    let request = pb::GetProductRequest { product_id: id.to_string() };
    let product = state
        .backends
        .product_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.get_product(r).await })
        .await?;
    Ok(Json(product.into_inner().into()))
}

/// Create a product (admin).
#[utoipa::path(post, path = "/api/v1/products", tag = "products", request_body = CreateProduct,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Product),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let request = pb::CreateProductRequest {
        name: body.name.trim().to_owned(),
        description: body.description.unwrap_or_default(),
        price_minor: body.price_minor,
        initial_stock: body.initial_stock.unwrap_or(0),
    };
    let product = state
        .backends
        .product_call(Idempotence::Once, &request, |mut c, r| async move { c.create_product(r).await })
        .await?;
    Ok((StatusCode::CREATED, Json(product.into_inner().into())))
}

/// Change a product's name, description or price (admin).
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "products", request_body = UpdateProduct,
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = Product),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateProduct>,
) -> Result<Json<Product>, ApiError> {
    let id = parse_id("id", &id)?;
    let request = pb::UpdateProductRequest {
        product_id: id.to_string(),
        name: body.name.map(|n| n.trim().to_owned()),
        description: body.description,
        price_minor: body.price_minor,
    };
    let product = state
        .backends
        .product_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.update_product(r).await })
        .await?;
    Ok(Json(product.into_inner().into()))
}

/// Add or remove stock (admin). Removing more than is available is a 409.
/// The same `reference` again with the same change is answered as done; with
/// another change or on another product, 409.
#[utoipa::path(post, path = "/api/v1/products/{id}/stock", tag = "products", request_body = StockChange,
    params(("id" = uuid::Uuid, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stock changed", body = Product),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 409, description = "Not enough stock to remove, or the reference was used for another change", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StockChange>,
) -> Result<Json<Product>, ApiError> {
    let id = parse_id("id", &id)?;
    let request = pb::AdjustStockRequest {
        product_id: id.to_string(),
        delta: body.delta,
        reference_id: body.reference.unwrap_or_default(),
    };
    // Without a reference, a second adjustment would add to the first.
    let idempotence = if request.reference_id.is_empty() { Idempotence::Once } else { Idempotence::Idempotent };
    let product =
        state.backends.product_call(idempotence, &request, |mut c, r| async move { c.adjust_stock(r).await }).await?;
    Ok(Json(product.into_inner().into()))
}
