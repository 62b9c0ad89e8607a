//! The user service: `POST /users` with a JSON array of {name, email} creates them all or none;
//! `GET /users` lists them.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tessera_service::{read_json, ApiError, AppState, Migration};

pub const DEFAULT_PORT: u16 = 5000;

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "users",
    sql: include_str!("../migrations/0001_users.sql"),
}];

/// The column width of name and email.
const MAX_TEXT: usize = 255;
/// More rows than this in one request is refused (each is one INSERT in one transaction).
const MAX_USERS: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/users", get(list_users).post(create_users))
}

#[derive(Debug, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub email: String,
}

/// Checks a request body: an array of objects with a non-empty `name` and `email` string each.
pub fn parse_users(body: &Value) -> Result<Vec<NewUser>, ApiError> {
    let Some(items) = body.as_array() else {
        return Err(ApiError::bad_request(
            "Invalid data format. Expected an array of users.",
        ));
    };
    if items.len() > MAX_USERS {
        return Err(ApiError::bad_request(format!(
            "Too many users in one request: {}; at most {MAX_USERS}.",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let field = |key: &str| -> Result<String, ApiError> {
                let value = item.get(key).ok_or_else(|| {
                    ApiError::bad_request(format!("User {index} has no {key:?}."))
                })?;
                let text = value.as_str().ok_or_else(|| {
                    ApiError::bad_request(format!("User {index}: {key:?} must be a string."))
                })?;
                if text.trim().is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "User {index}: {key:?} must not be empty."
                    )));
                }
                if text.chars().count() > MAX_TEXT {
                    return Err(ApiError::bad_request(format!(
                        "User {index}: {key:?} is longer than {MAX_TEXT} characters."
                    )));
                }
                if text.contains('\0') {
                    return Err(ApiError::bad_request(format!(
                        "User {index}: {key:?} must not contain NUL characters."
                    )));
                }
                Ok(text.to_string())
            };
            if !item.is_object() {
                return Err(ApiError::bad_request(format!(
                    "User {index} must be an object with \"name\" and \"email\"."
                )));
            }
            Ok(NewUser {
                name: field("name")?,
                email: field("email")?,
            })
        })
        .collect()
}

async fn create_users(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let users = parse_users(&read_json(body, state.max_body_bytes).await?)?;
    let mut client = state.pool.get().await.map_err(ApiError::database)?;
    // All rows or none.
    let tx = client.transaction().await.map_err(ApiError::database)?;
    let insert = tx
        .prepare_cached("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id")
        .await
        .map_err(ApiError::database)?;
    let mut ids = Vec::with_capacity(users.len());
    for user in &users {
        let row = tx
            .query_one(&insert, &[&user.name, &user.email])
            .await
            .map_err(ApiError::query)?;
        ids.push(row.get::<_, i32>(0));
    }
    tx.commit().await.map_err(ApiError::database)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": "Users created successfully", "user_ids": ids})),
    ))
}

async fn list_users(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let client = state.pool.get().await.map_err(ApiError::database)?;
    let rows = client
        .query("SELECT id, name, email FROM users ORDER BY id", &[])
        .await
        .map_err(ApiError::database)?;
    let users: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i32>(0),
                "name": r.get::<_, String>(1),
                "email": r.get::<_, String>(2),
            })
        })
        .collect();
    Ok(Json(Value::Array(users)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_an_array_of_users() {
        let users =
            parse_users(&json!([{"name": "Ada", "email": "ada@example.com"}])).expect("valid");
        assert_eq!(
            users,
            vec![NewUser {
                name: "Ada".into(),
                email: "ada@example.com".into()
            }]
        );
        assert!(parse_users(&json!([])).expect("empty is fine").is_empty());
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            (
                json!({"name": "a", "email": "b"}),
                "Expected an array of users",
            ),
            (json!([{"name": "a"}]), "User 0 has no \"email\""),
            (
                json!([{"name": 1, "email": "b"}]),
                "\"name\" must be a string",
            ),
            (json!([{"name": " ", "email": "b"}]), "must not be empty"),
            (
                json!([{"name": "a".repeat(256), "email": "b"}]),
                "longer than 255",
            ),
            (json!(["ada"]), "must be an object"),
        ];
        for (body, expected) in cases {
            let error = parse_users(&body).expect_err("invalid");
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(
                error.message.contains(expected),
                "{body}: {}",
                error.message
            );
        }
    }
}
