//! gRPC API of the product service.

use chrono::{DateTime, Utc};
use saga_proto::product::product_service_server::ProductService;
use saga_proto::product::{
    AdjustStockRequest, BatchGetProductsRequest, BatchGetProductsResponse, CreateProductRequest, GetProductRequest,
    ListProductsRequest, ListProductsResponse, Product, UpdateProductRequest,
};
use saga_runtime::db::{self, PoolName};
use saga_runtime::grpc::{database, internal, page_size, parse_uuid, timestamp};
use sqlx::{FromRow, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct ProductApi {
    pub pool: PgPool,
}

#[derive(FromRow)]
struct ProductRow {
    product_id: Uuid,
    name: String,
    description: String,
    price_minor: i64,
    available: i64,
    reserved: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ProductRow> for Product {
    fn from(r: ProductRow) -> Product {
        Product {
            product_id: r.product_id.to_string(),
            name: r.name,
            description: r.description,
            price_minor: r.price_minor,
            stock_available: r.available,
            stock_reserved: r.reserved,
            created_at: timestamp(r.created_at),
            updated_at: timestamp(r.updated_at),
        }
    }
}

const SELECT: &str = "SELECT p.product_id, p.name, p.description, p.price_minor, s.available, s.reserved, \
                      p.created_at, greatest(p.updated_at, s.updated_at) AS updated_at \
                      FROM products p JOIN stock s USING (product_id)";

async fn fetch(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE p.product_id = $1")).bind(id).fetch_optional(conn).await
}

#[tonic::async_trait]
impl ProductService for ProductApi {
    async fn create_product(&self, request: Request<CreateProductRequest>) -> Result<Response<Product>, Status> {
        let r = request.into_inner();
        if r.name.trim().is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        if r.price_minor < 0 {
            return Err(Status::invalid_argument("price_minor must not be negative"));
        }
        if r.initial_stock < 0 {
            return Err(Status::invalid_argument("initial_stock must not be negative"));
        }
        let id = Uuid::now_v7();
        let mut tx = db::begin(&self.pool, PoolName::Api).await.map_err(database)?;
        sqlx::query("INSERT INTO products (product_id, name, description, price_minor) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(r.name.trim())
            .bind(&r.description)
            .bind(r.price_minor)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        sqlx::query("INSERT INTO stock (product_id, available) VALUES ($1, $2)")
            .bind(id)
            .bind(r.initial_stock)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        let row = fetch(&mut tx, id).await.map_err(database)?.ok_or_else(|| internal("created product vanished"))?;
        tx.commit().await.map_err(database)?;
        tracing::info!(product_id = %id, "product created");
        Ok(Response::new(row.into()))
    }

    async fn update_product(&self, request: Request<UpdateProductRequest>) -> Result<Response<Product>, Status> {
        let r = request.into_inner();
        let id = parse_uuid("product_id", &r.product_id)?;
        if r.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        if r.price_minor.is_some_and(|p| p < 0) {
            return Err(Status::invalid_argument("price_minor must not be negative"));
        }
        let mut tx = db::begin(&self.pool, PoolName::Api).await.map_err(database)?;
        let updated = sqlx::query(
            "UPDATE products SET name = coalesce($2, name), description = coalesce($3, description), \
             price_minor = coalesce($4, price_minor), updated_at = now() WHERE product_id = $1",
        )
        .bind(id)
        .bind(r.name.as_deref().map(str::trim))
        .bind(r.description)
        .bind(r.price_minor)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        if updated.rows_affected() == 0 {
            return Err(Status::not_found(format!("no product {id}")));
        }
        let row = fetch(&mut tx, id).await.map_err(database)?.ok_or_else(|| Status::not_found("no product"))?;
        tx.commit().await.map_err(database)?;
        Ok(Response::new(row.into()))
    }

    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<Product>, Status> {
        let id = parse_uuid("product_id", &request.into_inner().product_id)?;
        let mut conn = db::acquire(&self.pool, PoolName::Api).await.map_err(database)?;
        let row = fetch(&mut conn, id).await.map_err(database)?;
        row.map(|r| Response::new(r.into())).ok_or_else(|| Status::not_found(format!("no product {id}")))
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size, 20, 100)?;
        let after = if r.page_token.is_empty() { Uuid::nil() } else { parse_uuid("page_token", &r.page_token)? };
        // Keyset paging on the id: stable under inserts, no OFFSET scans.
        let rows: Vec<ProductRow> =
            sqlx::query_as(&format!("{SELECT} WHERE p.product_id > $1 ORDER BY p.product_id LIMIT $2"))
                .bind(after)
                .bind(limit + 1)
                .fetch_all(&mut *db::acquire(&self.pool, PoolName::Api).await.map_err(database)?)
                .await
                .map_err(database)?;
        let more = rows.len() as i64 > limit;
        let products: Vec<Product> = rows.into_iter().take(limit as usize).map(Product::from).collect();
        let next_page_token = match (more, products.last()) {
            (true, Some(last)) => last.product_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListProductsResponse { products, next_page_token }))
    }

    async fn batch_get_products(
        &self,
        request: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        let r = request.into_inner();
        if r.product_ids.len() > 1000 {
            return Err(Status::invalid_argument("at most 1000 product_ids"));
        }
        let ids = r.product_ids.iter().map(|id| parse_uuid("product_ids", id)).collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<ProductRow> = sqlx::query_as(&format!("{SELECT} WHERE p.product_id = ANY($1)"))
            .bind(&ids)
            .fetch_all(&mut *db::acquire(&self.pool, PoolName::Api).await.map_err(database)?)
            .await
            .map_err(database)?;
        let products: Vec<Product> = rows.into_iter().map(Product::from).collect();
        let missing_ids =
            ids.iter().map(Uuid::to_string).filter(|id| !products.iter().any(|p| &p.product_id == id)).collect();
        Ok(Response::new(BatchGetProductsResponse { products, missing_ids }))
    }

    async fn adjust_stock(&self, request: Request<AdjustStockRequest>) -> Result<Response<Product>, Status> {
        let r = request.into_inner();
        let id = parse_uuid("product_id", &r.product_id)?;
        let mut tx = db::begin(&self.pool, PoolName::Api).await.map_err(database)?;
        if fetch(&mut tx, id).await.map_err(database)?.is_none() {
            return Err(Status::not_found(format!("no product {id}")));
        }
        let reference = (!r.reference_id.is_empty()).then_some(r.reference_id.as_str());
        let recorded = sqlx::query(
            "INSERT INTO stock_adjustments (product_id, delta, reference_id) VALUES ($1, $2, $3) \
             ON CONFLICT (reference_id) DO NOTHING",
        )
        .bind(id)
        .bind(r.delta)
        .bind(reference)
        .execute(&mut *tx)
        .await
        .map_err(database)?;
        if recorded.rows_affected() == 0 {
            // The reference is spent: a retry of the same change is done
            // already; another change under it must not pass as done.
            let (product, delta): (Uuid, i64) =
                sqlx::query_as("SELECT product_id, delta FROM stock_adjustments WHERE reference_id = $1")
                    .bind(reference)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(database)?;
            if product != id || delta != r.delta {
                return Err(Status::already_exists(format!(
                    "reference {:?} was used for another stock change ({delta:+} on product {product})",
                    r.reference_id
                )));
            }
        } else {
            // The CHECK (available >= 0) would also refuse it; the WHERE makes it a clean answer.
            let changed = sqlx::query(
                "UPDATE stock SET available = available + $2, updated_at = now() \
                 WHERE product_id = $1 AND available + $2 >= 0",
            )
            .bind(id)
            .bind(r.delta)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
            if changed.rows_affected() == 0 {
                return Err(Status::failed_precondition("not enough available stock to remove"));
            }
        }
        let row = fetch(&mut tx, id).await.map_err(database)?.ok_or_else(|| Status::not_found("no product"))?;
        tx.commit().await.map_err(database)?;
        Ok(Response::new(row.into()))
    }
}
