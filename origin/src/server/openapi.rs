//! The OpenAPI document, generated from the router itself so the two cannot drift.
//!
//! Routes are added through [`ApiRouter`], which takes each route's method, path, handler and
//! [`Doc`] together: it builds the axum router and records the operation in one step, and
//! [`ApiRouter::finish`] serves the resulting OpenAPI 3.1 document at `/v1/openapi.json`. A route
//! added any other way would be a bug that `tests/openapi.rs` looks for by probing every
//! documented operation on a real server. Path parameters are read from the `{name}` segments.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Query,
    Header,
}

/// A query or header parameter (path parameters come from the path).
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub required: bool,
    pub description: &'static str,
}

/// Shorthand for an optional query parameter.
pub const fn query(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: In::Query,
        required: false,
        description,
    }
}

/// Shorthand for an optional header.
pub const fn header(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: In::Header,
        required: false,
        description,
    }
}

/// What the document says about one operation.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    pub tag: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// Description of the JSON request body, if the operation takes one.
    pub body: Option<&'static str>,
    /// Status codes and what they mean.
    pub responses: &'static [(u16, &'static str)],
}

/// One recorded operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    pub path: &'static str,
    pub doc: Doc,
}

/// A router that documents every route it is given.
pub struct ApiRouter<S> {
    router: Router<S>,
    ops: Vec<Operation>,
}

impl<S: Clone + Send + Sync + 'static> Default for ApiRouter<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> ApiRouter<S> {
    pub fn new() -> Self {
        ApiRouter {
            router: Router::new(),
            ops: Vec::new(),
        }
    }

    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<S>, doc: Doc) -> Self {
        self.router = self.router.route(path, route);
        self.ops.push(Operation { method, path, doc });
        self
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, h: H, doc: Doc) -> Self {
        self.add(Method::GET, path, get(h), doc)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, h: H, doc: Doc) -> Self {
        self.add(Method::POST, path, post(h), doc)
    }

    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &'static str, h: H, doc: Doc) -> Self {
        self.add(Method::PUT, path, put(h), doc)
    }

    pub fn patch<H: Handler<T, S>, T: 'static>(self, path: &'static str, h: H, doc: Doc) -> Self {
        self.add(Method::PATCH, path, patch(h), doc)
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, h: H, doc: Doc) -> Self {
        self.add(Method::DELETE, path, delete(h), doc)
    }

    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// Adds `GET /v1/openapi.json` (documented too) and returns the router.
    pub fn finish(mut self, title: &str, description: &str) -> Router<S> {
        self.ops.push(Operation {
            method: Method::GET,
            path: "/v1/openapi.json",
            doc: Doc {
                tag: "ops",
                summary: "This OpenAPI document",
                params: &[],
                body: None,
                responses: &[(200, "the document")],
            },
        });
        let document = std::sync::Arc::new(document(&self.ops, title, description));
        self.router.route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json((*document).clone()) }
            }),
        )
    }
}

/// Builds the OpenAPI 3.1 document for `ops`.
pub fn document(ops: &[Operation], title: &str, description: &str) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in ops {
        let mut params: Vec<Value> = path_params(op.path)
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        params.extend(op.doc.params.iter().map(|p| {
            json!({
                "name": p.name,
                "in": match p.location { In::Query => "query", In::Header => "header" },
                "required": p.required,
                "description": p.description,
                "schema": {"type": "string"},
            })
        }));
        let responses: Map<String, Value> = op
            .doc
            .responses
            .iter()
            .map(|(code, what)| (code.to_string(), json!({"description": what})))
            .collect();
        let mut operation = json!({
            "tags": [op.doc.tag],
            "summary": op.doc.summary,
            "operationId": operation_id(&op.method, op.path),
            "parameters": params,
            "responses": responses,
        });
        if let Some(body) = op.doc.body {
            operation["requestBody"] = json!({
                "description": body,
                "content": {"application/json": {"schema": {}}},
            });
        }
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": env!("CARGO_PKG_VERSION"), "description": description},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}
            }}}
        }}},
    })
}

fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(seg.chars().filter(|c| c.is_ascii_alphanumeric()));
    }
    if path == "/" {
        id.push_str("_root");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: Doc = Doc {
        tag: "t",
        summary: "s",
        params: &[query("limit", "most items")],
        body: Some("a thing"),
        responses: &[(200, "ok"), (404, "missing")],
    };

    #[test]
    fn every_route_added_is_in_the_document_with_its_path_params() {
        let api: ApiRouter<()> = ApiRouter::new()
            .get("/v1/things/{id}", || async {}, DOC)
            .delete("/v1/things/{id}", || async {}, DOC)
            .post("/v1/things", || async {}, DOC);
        let doc = document(api.operations(), "x", "y");
        let thing = &doc["paths"]["/v1/things/{id}"];
        assert!(thing["get"].is_object() && thing["delete"].is_object());
        assert_eq!(thing["get"]["parameters"][0]["name"], "id");
        assert_eq!(thing["get"]["parameters"][0]["in"], "path");
        assert_eq!(thing["get"]["parameters"][1]["name"], "limit");
        assert_eq!(thing["get"]["operationId"], "get_v1_things_id");
        assert_eq!(
            doc["paths"]["/v1/things"]["post"]["responses"]["404"]["description"],
            "missing"
        );
        assert_eq!(doc["paths"].as_object().unwrap().len(), 2);
    }
}
