//! The products' outbox receivers, as the demo pipelines name them
//! (`[outbox.endpoints] paste = "http://127.0.0.1:7879/products/paste"`): `POST
//! /products/{product}` takes one message (a user's unified id, from
//! `id-propagation`), kept once per `Idempotency-Key` as a product would;
//! `GET /sim/products?product=` reads what each product was told.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::world::Sim;

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// One message for `product`: 202 the first time its idempotency key is seen, 200 for
/// a duplicate (kept once), 400 without a key.
pub async fn receive(
    State(sim): State<Arc<Sim>>,
    Path(product): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let Some(key) = header(&headers, "idempotency-key") else {
        return StatusCode::BAD_REQUEST;
    };
    let mut world = sim.world();
    if !world.product_keys.insert(key.clone()) {
        return StatusCode::OK;
    }
    world.product_messages.push(json!({
        "product": product,
        "topic": header(&headers, "x-portcullis-topic"),
        "idempotency_key": key,
        "body": body,
    }));
    *world.counters.entry("product_messages").or_default() += 1;
    StatusCode::ACCEPTED
}

#[derive(Deserialize)]
pub struct ProductQuery {
    product: Option<String>,
}

/// The messages the products took (one product's with `?product=`), oldest first.
pub async fn messages(
    State(sim): State<Arc<Sim>>,
    Query(query): Query<ProductQuery>,
) -> Json<Value> {
    let world = sim.world();
    let mine = |m: &&Value| query.product.as_deref().is_none_or(|p| m["product"] == p);
    Json(json!({
        "messages": world.product_messages.iter().filter(mine).cloned().collect::<Vec<_>>(),
    }))
}
