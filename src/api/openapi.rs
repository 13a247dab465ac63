//! The API's OpenAPI document, built from the same endpoint table the router is built from, with
//! request schemas derived from the request types: a route cannot exist without its entry, and a
//! request field cannot change without its schema. Response schemas are declared here and checked
//! against live answers by the end-to-end tests.

use serde_json::{json, Map, Value};

/// How an endpoint is authenticated.
#[derive(Clone, Copy)]
pub enum Auth {
    Public,
    Admin,
    Key(&'static str),
}

/// One endpoint as documented.
pub struct Doc {
    pub method: &'static str,
    pub path: &'static str,
    pub auth: Auth,
    pub summary: &'static str,
    /// The JSON body's schema, when it takes one.
    pub body: Option<Value>,
    /// Query parameters: (name, JSON type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// The success status and its body's schema.
    pub ok: (u16, Value),
}

/// An object schema with these required fields (name, type or schema).
pub fn object(fields: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    for (k, v) in fields {
        props.insert(k.to_string(), v.clone());
    }
    json!({"type": "object", "required": fields.iter().map(|(k, _)| *k).collect::<Vec<_>>(), "properties": props})
}

pub fn t(ty: &str) -> Value {
    json!({"type": ty})
}

pub fn nullable(ty: &str) -> Value {
    json!({"type": [ty, "null"]})
}

pub fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// `T`'s schema with its subschemas inline: a `$ref` to schemars' `$defs` would resolve from the
/// OpenAPI document's root, where they are not.
pub fn schema<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schemas serialize")
}

/// The error body every refusal has.
fn error_schema() -> Value {
    object(&[
        ("success", t("boolean")),
        ("error", t("string")),
        ("error_code", t("string")),
    ])
}

/// The whole document.
pub fn document(docs: &[Doc]) -> Value {
    let mut paths = Map::new();
    for d in docs {
        let mut op = Map::new();
        op.insert("summary".into(), json!(d.summary));
        let security = match d.auth {
            Auth::Public => json!([]),
            Auth::Admin => json!([{"adminKey": []}]),
            Auth::Key(_) => json!([{"apiKey": []}]),
        };
        op.insert("security".into(), security);
        if let Auth::Key(scope) = d.auth {
            op.insert("x-scope".into(), json!(scope));
        }
        let mut params: Vec<Value> = d
            .query
            .iter()
            .map(|(n, ty, desc)| json!({"name": n, "in": "query", "required": false, "description": desc, "schema": {"type": ty}}))
            .collect();
        for seg in d.path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(b) = &d.body {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": b}}}),
            );
        }
        let err = json!({"description": "refused", "content": {"application/json": {"schema": error_schema()}}});
        let mut responses = Map::new();
        responses.insert(
            d.ok.0.to_string(),
            json!({"description": "success", "content": {"application/json": {"schema": d.ok.1}}}),
        );
        let mut codes = vec!["400", "503"];
        match d.auth {
            Auth::Public => {}
            Auth::Admin => codes.push("401"),
            Auth::Key(_) => codes.extend(["401", "403", "429"]),
        }
        if d.path.contains('{') {
            codes.push("404");
        }
        for c in codes {
            responses.insert(c.into(), err.clone());
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(d.path.to_string()).or_insert_with(|| json!({}));
        entry
            .as_object_mut()
            .expect("object")
            .insert(d.method.to_ascii_lowercase(), Value::Object(op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tollgate management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Hosted x402 service: tenants, plans, API keys, usage and payment verification (the x402 Infrastructure SaaS contract).",
        },
        "components": {"securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "a tenant key, x402_live_… or x402_test_…"},
            "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"},
        }},
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every `$ref` of the served document, with the JSON pointer it names resolved from the root.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_from_the_document_root() {
        let doc = crate::api::openapi_document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in &found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{r}: not a local reference"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{r} does not resolve from the document root"
            );
        }
    }

    #[test]
    fn tenant_routes_document_the_route_fields_and_answer_modes() {
        let doc = crate::api::openapi_document();
        let text = doc.to_string();
        let patch = doc
            .pointer("/paths/~1api~1v1~1x402~1tenant/patch/requestBody/content/application~1json/schema")
            .expect("PATCH /tenant has a body schema");
        let route = &patch["properties"]["routes"];
        assert!(!route.is_null(), "{patch}");
        for word in [
            "\"confirmed\"",
            "\"submitted\"",
            "\"verified\"",
            "\"at_least\"",
            "\"after\"",
        ] {
            assert!(text.contains(word), "{word} is not in the document");
        }
    }
}
