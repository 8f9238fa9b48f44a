//! Renders the OpenAPI document as one self-contained HTML page: operations grouped by tag
//! (method, path, summary, parameters, body, responses) and every schema with its fields.
use serde_json::Value;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn schema_name(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    if let Some(items) = schema.get("items") {
        return format!("array of {}", schema_name(items));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            let names: Vec<String> = list.iter().map(schema_name).collect();
            return names.join(" | ");
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "),
        _ => "object".to_owned(),
    };
    match schema.get("format").and_then(Value::as_str) {
        Some(f) => format!("{} ({})", esc(&ty), esc(f)),
        None => esc(&ty),
    }
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).map(esc).unwrap_or_default()
}

pub fn page(openapi_json: &str) -> String {
    let doc: Value = serde_json::from_str(openapi_json).unwrap_or(Value::Null);
    let mut out = String::with_capacity(64 * 1024);
    let title = text(doc.pointer("/info/title"));
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>\
body{{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#1f2328}}\
code,.path{{font-family:ui-monospace,monospace}}h2{{border-bottom:1px solid #d0d7de;margin-top:2.5rem}}\
.op{{border:1px solid #d0d7de;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}}\
.m{{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}}\
.get{{color:#1a7f37}}.post{{color:#0969da}}.patch,.put{{color:#9a6700}}.delete{{color:#cf222e}}\
table{{border-collapse:collapse;margin:.3rem 0}}td,th{{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:left;vertical-align:top}}\
nav a{{margin-right:1rem}}</style></head><body><h1>{title}</h1><p>{}</p><p>Version {} · \
<a href=\"openapi.json\">openapi.json</a></p>",
        text(doc.pointer("/info/description")),
        text(doc.pointer("/info/version")),
    );

    let mut by_tag: std::collections::BTreeMap<String, Vec<(String, String, &Value)>> = Default::default();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    continue;
                }
                let tag = op
                    .pointer("/tags/0")
                    .and_then(Value::as_str)
                    .unwrap_or("other")
                    .to_owned();
                by_tag.entry(tag).or_default().push((method.clone(), path.clone(), op));
            }
        }
    }
    out.push_str("<nav>");
    for tag in by_tag.keys() {
        let _ = write!(out, "<a href=\"#tag-{0}\">{0}</a>", esc(tag));
    }
    out.push_str("<a href=\"#schemas\">schemas</a></nav>");

    for (tag, ops) in &by_tag {
        let _ = write!(out, "<h2 id=\"tag-{0}\">{0}</h2>", esc(tag));
        for (method, path, op) in ops {
            let _ = write!(
                out,
                "<div class=\"op\"><p><span class=\"m {m}\">{m}</span> <span class=\"path\">{p}</span></p><p>{s}</p>",
                m = esc(method),
                p = esc(path),
                s = text(op.get("description").or_else(|| op.get("summary"))),
            );
            if let Some(params) = op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) {
                out.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th></th></tr>");
                for p in params {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        text(p.get("name")),
                        text(p.get("in")),
                        p.get("schema").map(schema_name).unwrap_or_default(),
                        if p.get("required").and_then(Value::as_bool).unwrap_or(false) {
                            "yes"
                        } else {
                            "no"
                        },
                        text(p.get("description")),
                    );
                }
                out.push_str("</table>");
            }
            if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
                let _ = write!(out, "<p>Body: {}</p>", schema_name(body));
            }
            out.push_str("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>");
            for (status, resp) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
                let body = resp
                    .get("content")
                    .and_then(Value::as_object)
                    .and_then(|c| c.values().next())
                    .and_then(|c| c.get("schema"))
                    .map(schema_name)
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(status),
                    text(resp.get("description")),
                    body
                );
            }
            out.push_str("</table></div>");
        }
    }

    out.push_str("<h2 id=\"schemas\">schemas</h2>");
    for (name, schema) in doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let _ = write!(out, "<h3 id=\"schema-{0}\">{0}</h3>", esc(name));
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th></th></tr>");
            for (field, prop) in props {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(field),
                    schema_name(prop),
                    if required.contains(&field.as_str()) {
                        "yes"
                    } else {
                        "no"
                    },
                    text(prop.get("description")),
                );
            }
            out.push_str("</table>");
        } else if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            let values: Vec<String> = values.iter().map(|v| esc(&v.to_string())).collect();
            let _ = write!(out, "<p>One of: <code>{}</code></p>", values.join(", "));
        } else {
            let _ = write!(out, "<p>{}</p>", schema_name(schema));
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_operations_and_schemas_escaped() {
        let doc = r##"{"info":{"title":"T<1>","version":"1"},"paths":{"/a/{id}":{"get":{"tags":["x"],"summary":"Get a",
            "parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string","format":"uuid"}}],
            "responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/A"}}}}}}}},
            "components":{"schemas":{"A":{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}}}}"##;
        let html = super::page(doc);
        assert!(html.contains("T&lt;1&gt;"));
        assert!(html.contains("/a/{id}"));
        assert!(html.contains("href=\"#schema-A\""));
        assert!(html.contains("id=\"schema-A\""));
    }
}
