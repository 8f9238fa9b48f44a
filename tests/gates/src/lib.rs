//! Quality gates every route inherits, driven by the committed openapi.json:
//!
//! - the route tables (`ROUTES` next to each function's routes) match the document exactly;
//! - tenant isolation sweep: every operation with a path id is called as tenant B on tenant A's
//!   resource (made by the route group's factory) with every method: 404 and nothing of A's
//!   changed; every list as B never shows A's ids;
//! - role sweep: each tenant operation refuses the roles below its declared minimum (403) and
//!   lets the others through the role gate.
//!
//! A new route without a factory or a table entry fails with a message saying what to add.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use axum::Router;
use http::Method;
use serde_json::Value;
use shared::domain::Role;
use shared::http::routes::{Access, RouteSpec};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use testkit::{Resp, TestApp, TestUser};
use uuid::Uuid;

/// Path parameter values for one concrete resource.
pub type Params = BTreeMap<String, String>;

/// Makes a resource of tenant A for `(method, path template)` and returns its path parameters;
/// `None` when the route group has no factory for that path (the sweep then says what to add).
pub type Factory = for<'a> fn(&'a World, &'a str) -> Pin<Box<dyn Future<Output = Option<Params>> + 'a>>;

/// One HTTP function under the gates.
pub struct Function {
    pub name: &'static str,
    pub routes: &'static [RouteSpec],
    pub router: fn(&TestApp) -> Router,
    pub factory: Factory,
    /// Where its sample bodies live: `events/<events_dir>/`.
    pub events_dir: &'static str,
    /// Path parameters that name a catalog entry every tenant has its own of (a connector's
    /// `kind`), not a resource of one tenant. As B in B's own tenant such a path answers B's
    /// own entry: it must show nothing of A's (the factory's `_marker` value) and change
    /// nothing of A's; naming A's tenant it answers 404 like any other.
    pub keys: &'static [&'static str],
}

/// An operation of the document with its declared access and owning function.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    pub path: String,
    pub access: Access,
    pub function: usize,
    pub has_body: bool,
}

impl Operation {
    pub fn params(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect()
    }

    pub fn concrete(&self, params: &Params) -> String {
        let mut path = self.path.clone();
        for (k, v) in params {
            path = path.replace(&format!("{{{k}}}"), v);
        }
        path
    }
}

pub struct Tenant {
    pub id: Uuid,
    pub owner: TestUser,
}

/// Two tenants and every function's router over one fresh database.
pub struct World {
    pub app: TestApp,
    pub a: Tenant,
    pub b: Tenant,
    routers: Vec<Router>,
    names: Vec<&'static str>,
}

impl World {
    pub async fn new(functions: &[Function]) -> Self {
        let app = TestApp::new().await;
        let owner_a = app.user("owner-a").await;
        let a = app.tenant(&owner_a).await;
        let owner_b = app.user("owner-b").await;
        let b = app.tenant(&owner_b).await;
        // The sweeps create many resources: both tenants are on the plan without seat limits.
        app.subscribe(a, "scale").await;
        app.subscribe(b, "scale").await;
        let routers = functions.iter().map(|f| (f.router)(&app)).collect();
        let names = functions.iter().map(|f| f.name).collect();
        Self {
            app,
            a: Tenant { id: a, owner: owner_a },
            b: Tenant { id: b, owner: owner_b },
            routers,
            names,
        }
    }

    pub async fn call(&self, op: &Operation, path: &str, who: &TestUser, tenant: Uuid, body: Option<&Value>) -> Resp {
        let mut req = testkit::req(op.method.parse::<Method>().unwrap(), path)
            .bearer(&who.token)
            .tenant(tenant);
        if let Some(body) = body {
            req = req.json(body.clone());
        }
        req.send(&self.routers[op.function]).await
    }

    /// Sends a request to the named function's router (for factories).
    pub async fn api(&self, function: &str, req: testkit::Req) -> Resp {
        let i = self
            .names
            .iter()
            .position(|n| *n == function)
            .expect("function is registered");
        req.send(&self.routers[i]).await
    }

    /// A request as tenant A's owner (what factories use to make A's resources).
    pub fn as_a(&self, req: testkit::Req) -> testkit::Req {
        req.bearer(&self.a.owner.token).tenant(self.a.id)
    }

    /// Everything of tenant A, as one comparable value: a digest per tenant table (and of A's
    /// tenant row and members' user rows), read as the owner so RLS hides nothing.
    pub async fn fingerprint(&self, tenant: Uuid) -> BTreeMap<String, String> {
        let tables: Vec<String> = sqlx::query_scalar(
            "select table_name::text from information_schema.columns where table_schema = 'public' \
             and column_name = 'tenant_id' and table_name <> '_sqlx_migrations' order by 1",
        )
        .fetch_all(&self.app.db.owner)
        .await
        .unwrap();
        let mut out = BTreeMap::new();
        for table in tables {
            let digest: Option<String> = sqlx::query_scalar(&format!(
                "select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {table} t where tenant_id = $1"
            ))
            .bind(tenant)
            .fetch_one(&self.app.db.owner)
            .await
            .unwrap();
            out.insert(table, digest.unwrap_or_default());
        }
        for (name, sql) in [
            ("tenants", "select md5(t::text) from tenants t where id = $1"),
            (
                "users",
                "select md5(coalesce(string_agg(u::text, '|' order by u::text), '')) from users u \
                 where id in (select user_id from memberships where tenant_id = $1)",
            ),
        ] {
            let digest: Option<String> = sqlx::query_scalar(sql)
                .bind(tenant)
                .fetch_optional(&self.app.db.owner)
                .await
                .unwrap()
                .flatten();
            out.insert(name.to_owned(), digest.unwrap_or_default());
        }
        out
    }
}

/// Every (method, path) of an OpenAPI document, with whether it takes a body.
pub fn operations(doc: &Value) -> Vec<(String, String, bool)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.push((method.to_uppercase(), path.clone(), op.get("requestBody").is_some()));
            }
        }
    }
    ops
}

/// Joins the document with the route tables; every mismatch is a message saying what to fix.
pub fn join_tables(doc: &Value, functions: &[Function]) -> Result<Vec<Operation>, Vec<String>> {
    let mut problems = Vec::new();
    let mut ops = Vec::new();
    for (method, path, has_body) in operations(doc) {
        let owners: Vec<(usize, &RouteSpec)> = functions
            .iter()
            .enumerate()
            .flat_map(|(i, f)| f.routes.iter().map(move |r| (i, r)))
            .filter(|(_, r)| r.method == method && r.path == path)
            .collect();
        match owners.as_slice() {
            [(function, spec)] => ops.push(Operation { method, path, access: spec.access, function: *function, has_body }),
            [] => problems.push(format!(
                "{method} {path} is in openapi.json but in no ROUTES table: add it to its function's ROUTES (and register the function in tests/gates)"
            )),
            _ => problems.push(format!("{method} {path} is in more than one ROUTES table")),
        }
    }
    for f in functions {
        for r in f.routes {
            if !ops.iter().any(|o| o.method == r.method && o.path == r.path) {
                problems.push(format!(
                    "{} ROUTES has {} {} but openapi.json does not (regenerate it)",
                    f.name, r.method, r.path
                ));
            }
        }
    }
    if problems.is_empty() { Ok(ops) } else { Err(problems) }
}

/// The sample body of an operation: the `body` of its events/ file (the same files
/// `cargo lambda invoke` uses), named `<method>-<path segments>.json`.
pub fn sample_body(function: &Function, op: &Operation) -> Result<Option<Value>, String> {
    if !op.has_body {
        return Ok(None);
    }
    let name: String = op
        .path
        .trim_start_matches('/')
        .split('/')
        .map(|s| s.trim_start_matches('{').trim_end_matches('}').replace(['_', '.'], "-"))
        .collect::<Vec<_>>()
        .join("-");
    let file = format!(
        "{}/../../events/{}/{}-{name}.json",
        env!("CARGO_MANIFEST_DIR"),
        function.events_dir,
        op.method.to_lowercase()
    );
    let text = std::fs::read_to_string(&file)
        .map_err(|_| format!("{} {} takes a body: add a sample event {file}", op.method, op.path))?;
    let event: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let body = event["body"].as_str().ok_or_else(|| format!("{file} has no body"))?;
    serde_json::from_str(body)
        .map(Some)
        .map_err(|e| format!("{file}: body is not JSON: {e}"))
}

/// What a sweep did and what it found.
#[derive(Debug, Default)]
pub struct Report {
    pub calls: usize,
    pub failures: Vec<String>,
}

impl Report {
    pub fn assert_clean(&self, gate: &str) {
        assert!(
            self.failures.is_empty(),
            "{gate} found {} problem(s):\n- {}",
            self.failures.len(),
            self.failures.join("\n- ")
        );
    }
}

async fn make(world: &World, functions: &[Function], op: &Operation) -> Result<Params, String> {
    let function = &functions[op.function];
    (function.factory)(world, &op.path).await.ok_or_else(|| {
        format!(
            "{} {} has a path id but no factory: add a match arm for \"{}\" in the `{}` factory of tests/gates (it makes the resource as tenant A and returns its path parameters)",
            op.method, op.path, op.path, function.name
        )
    })
}

fn is_role_refusal(r: &Resp) -> bool {
    r.status == 403
        && r.json["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("this needs the"))
}

/// Tenant isolation sweep (see the crate docs).
pub async fn isolation_sweep(world: &World, functions: &[Function], ops: &[Operation]) -> Report {
    let mut report = Report::default();
    let mut a_ids: Vec<String> = vec![world.a.id.to_string(), world.a.owner.id.to_string()];
    for op in ops
        .iter()
        .filter(|o| !o.params().is_empty() && o.access != Access::Public && o.access != Access::Signed)
    {
        let params = match make(world, functions, op).await {
            Ok(p) => p,
            Err(e) => {
                report.failures.push(e);
                continue;
            }
        };
        let keyed = op
            .params()
            .iter()
            .all(|p| functions[op.function].keys.contains(&p.as_str()));
        if !keyed {
            // A small number in a path is an ordinal within A's resource (a revision number),
            // not an id of A's: it is in any answer's text by chance, so it is not looked for.
            a_ids.extend(
                params
                    .iter()
                    .filter(|(k, v)| !k.starts_with('_') && v.parse::<u32>().is_err())
                    .map(|(_, v)| v.clone()),
            );
        }
        let marker = params.get("_marker").cloned();
        let body = match sample_body(&functions[op.function], op) {
            Ok(b) => b,
            Err(e) => {
                report.failures.push(e);
                continue;
            }
        };
        let path = op.concrete(&params);
        let before = world.fingerprint(world.a.id).await;
        // As B in B's own tenant, and as B naming A's tenant.
        for tenant in [world.b.id, world.a.id] {
            let r = world.call(op, &path, &world.b.owner, tenant, body.as_ref()).await;
            report.calls += 1;
            let ok = match op.access {
                Access::Tenant(_) if keyed && tenant == world.b.id => {
                    !r.status.is_server_error() && marker.as_deref().is_some_and(|m| !r.text.contains(m))
                }
                Access::Tenant(_) => r.status == 404,
                // A capability in the path (an invitation token) is not B's to use.
                _ => !r.status.is_success() && !r.status.is_server_error(),
            };
            if !ok {
                report.failures.push(format!(
                    "{} {path} as tenant B (X-Tenant-Id {tenant}) answered {} instead of 404: {}",
                    op.method, r.status, r.text
                ));
            }
        }
        if world.fingerprint(world.a.id).await != before {
            report
                .failures
                .push(format!("{} {path} as tenant B changed tenant A's data", op.method));
        }
    }
    // Lists (and searches, exports) as B never contain A's ids.
    for op in ops
        .iter()
        .filter(|o| o.method == "GET" && o.params().is_empty() && matches!(o.access, Access::Tenant(_) | Access::User))
    {
        let r = world.call(op, &op.path, &world.b.owner, world.b.id, None).await;
        report.calls += 1;
        if r.status.is_server_error() {
            report
                .failures
                .push(format!("GET {} as tenant B answered {}", op.path, r.status));
        }
        for id in &a_ids {
            if r.text.contains(id.as_str()) {
                report
                    .failures
                    .push(format!("GET {} as tenant B shows tenant A's id {id}", op.path));
            }
        }
    }
    report
}

/// Role sweep (see the crate docs): each role below the minimum gets 403, the others pass the
/// role gate (whatever the operation then answers).
pub async fn role_sweep(world: &World, functions: &[Function], ops: &[Operation]) -> Report {
    let mut report = Report::default();
    let mut members = BTreeMap::new();
    for role in Role::ALL {
        let user = world.app.user(&format!("{role}-of-a")).await;
        if role != Role::Owner {
            world.app.add_member(world.a.id, &user, role).await;
        }
        members.insert(
            role,
            if role == Role::Owner {
                world.a.owner.clone()
            } else {
                user
            },
        );
    }
    for op in ops {
        // Without a credential every route that needs one answers 401 (the contract gate's
        // schemathesis sends its token with every request, so this is where it is checked).
        if matches!(op.access, Access::User | Access::Tenant(_)) {
            let params = if op.params().is_empty() {
                Params::new()
            } else {
                match make(world, functions, op).await {
                    Ok(p) => p,
                    Err(e) => {
                        report.failures.push(e);
                        continue;
                    }
                }
            };
            let body = sample_body(&functions[op.function], op).ok().flatten();
            let mut req = testkit::req(op.method.parse::<Method>().unwrap(), &op.concrete(&params)).tenant(world.a.id);
            if let Some(body) = body {
                req = req.json(body);
            }
            let r = req.send(&world.routers[op.function]).await;
            report.calls += 1;
            if r.status != 401 {
                report.failures.push(format!(
                    "{} {} needs a credential but answered {} without one: {}",
                    op.method, op.path, r.status, r.text
                ));
            }
        }
        let Access::Tenant(min) = op.access else {
            continue;
        };
        let body = match sample_body(&functions[op.function], op) {
            Ok(b) => b,
            Err(e) => {
                report.failures.push(e);
                continue;
            }
        };
        for role in Role::ALL {
            let params = if op.params().is_empty() {
                Params::new()
            } else {
                match make(world, functions, op).await {
                    Ok(p) => p,
                    Err(e) => {
                        report.failures.push(e);
                        break;
                    }
                }
            };
            let path = op.concrete(&params);
            let r = world.call(op, &path, &members[&role], world.a.id, body.as_ref()).await;
            report.calls += 1;
            if role < min && !is_role_refusal(&r) {
                report.failures.push(format!(
                    "{} {} declares minimum role {min} but a {role} got {}: {}",
                    op.method, op.path, r.status, r.text
                ));
            }
            if role >= min && (is_role_refusal(&r) || r.status.is_server_error()) {
                report.failures.push(format!(
                    "{} {} declares minimum role {min} but a {role} got {}: {}",
                    op.method, op.path, r.status, r.text
                ));
            }
        }
    }
    report
}

/// Writes a gate's figures for the test command's summary (target/gates/<gate>.json).
pub fn record_figures(gate: &str, figures: Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/gates");
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(format!("{dir}/{gate}.json"), figures.to_string());
}
