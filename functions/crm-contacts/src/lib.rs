//! `crm-contacts`: contacts and companies (custom fields, search, keyset lists with filters,
//! detail with company and timeline, JSON merge patch with If-Match, merging duplicates) and
//! the tenant's custom-field definitions; imports of a CSV (presigned upload) or of Zoho CRM (a job the
//! `crm-import` worker runs) and exports (a job that ends in a presigned download). Rules live
//! in `shared::services::crm`.
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use shared::adapters::crm_files::CrmFiles;
use shared::domain::{PageParams, ResultPage, Role};
use shared::http::docs::{
    BodyProblems, Conflict, IdempotencyHeader, IfMatchHeader, ListProblems, NotFound, PlanLimit, PreconditionFailed,
    TenantHeader, TenantProblems,
};
use shared::http::routes::{Access, RouteSpec};
use shared::http::{
    ApiError, Body, Core, IfMatch, Json, Params, PathId, RawIdempotencyKey, TenantCtx, etag, min, replayed_or,
};
use shared::services::crm::companies::{self, Company, CompanyDetail, CompanyInput, CompanyListParams};
use shared::services::crm::contacts::{self, Contact, ContactDetail, ContactInput, ContactListParams, MergeRequest};
use shared::services::crm::exports::{Export, NewExport};
use shared::services::crm::fields::{self, CustomField, Entity, NewCustomField};
use shared::services::crm::imports::{self, Import, NewImport, NewUpload, Upload};
use shared::services::crm::jobs::files;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const TAG: &str = "crm";

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::new("GET", "/crm/contacts", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/contacts", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/contacts/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/crm/contacts/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("DELETE", "/crm/contacts/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("POST", "/crm/contacts/{id}/merge", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/companies", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/companies", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/companies/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("PATCH", "/crm/companies/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("DELETE", "/crm/companies/{id}", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/custom-fields", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/custom-fields", Access::Tenant(Role::Admin)),
    RouteSpec::new("DELETE", "/crm/custom-fields/{id}", Access::Tenant(Role::Admin)),
    RouteSpec::new("POST", "/crm/imports/uploads", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/imports", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/imports", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/imports/{id}", Access::Tenant(Role::Viewer)),
    RouteSpec::new("POST", "/crm/exports", Access::Tenant(Role::Member)),
    RouteSpec::new("GET", "/crm/exports/{id}", Access::Tenant(Role::Member)),
];

/// What the handlers share: the core (database, auth) and the jobs' bucket and queue.
#[derive(Clone)]
pub struct CrmState {
    pub core: Core,
    pub files: CrmFiles,
}

impl FromRef<CrmState> for Core {
    fn from_ref(state: &CrmState) -> Core {
        state.core.clone()
    }
}

pub fn api() -> OpenApiRouter<CrmState> {
    OpenApiRouter::with_openapi(shared::http::docs::base())
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(get_contact, update_contact, delete_contact))
        .routes(routes!(merge_contact))
        .routes(routes!(list_companies, create_company))
        .routes(routes!(get_company, update_company, delete_company))
        .routes(routes!(list_fields, create_field))
        .routes(routes!(delete_field))
        .routes(routes!(create_upload))
        .routes(routes!(list_imports, create_import))
        .routes(routes!(get_import))
        .routes(routes!(create_export))
        .routes(routes!(get_export))
}

pub fn router(core: Core, files: CrmFiles) -> Router {
    let (routes, _) = api().split_for_parts();
    shared::http::finish(routes.with_state(CrmState { core, files }))
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// Contacts: filters, custom-field filters, search (`q`: names, emails, company names; word
/// prefixes first, typos tolerated) and any offered sort, in keyset pages.
#[utoipa::path(get, path = "/crm/contacts", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams, ContactListParams),
    responses((status = 200, body = ResultPage<Contact>), TenantProblems, ListProblems))]
async fn list_contacts(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<ContactListParams>,
) -> Result<Json<ResultPage<Contact>>, ApiError> {
    Ok(Json(contacts::list(&core.db, &ctx.scope, params).await?))
}

/// Create a contact (member). Email is unique per tenant (409 `email_exists`); counts against
/// the plan's `contacts`. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/crm/contacts", tag = TAG, security(("bearer" = [])), request_body = ContactInput,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Contact), Conflict, PlanLimit, TenantProblems, BodyProblems))]
async fn create_contact(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    idem: RawIdempotencyKey,
    body: Body<ContactInput>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /crm/contacts", &body.raw)?;
    Ok(replayed_or(
        contacts::create(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

/// A contact with its company and the newest entries of its timeline.
#[utoipa::path(get, path = "/crm/contacts/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = ContactDetail, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_contact(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let detail = contacts::get(&core.db, &ctx.scope, id).await?;
    Ok(([etag(detail.contact.version)], Json(detail)).into_response())
}

/// Change a contact (member): a JSON merge patch (RFC 7396; `null` clears), validated as a
/// whole. `If-Match` optional; a stale ETag answers 412.
#[utoipa::path(patch, path = "/crm/contacts/{id}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of ContactInput to change"),
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Contact, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
        TenantProblems, BodyProblems))]
async fn update_contact(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<Value>,
) -> Result<Response, ApiError> {
    let contact = contacts::update(&core.db, &ctx.scope, id, body.value, version).await?;
    Ok(([etag(contact.version)], Json(contact)).into_response())
}

/// Delete a contact (member) and its timeline.
#[utoipa::path(delete, path = "/crm/contacts/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 204), NotFound, TenantProblems))]
async fn delete_contact(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    contacts::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Merge a duplicate into this contact (member): every link moves here, values missing here
/// are taken from it, its email joins `other_emails`, and it is deleted.
#[utoipa::path(post, path = "/crm/contacts/{id}/merge", tag = TAG, security(("bearer" = [])), request_body = MergeRequest,
    params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Contact), NotFound, TenantProblems, BodyProblems))]
async fn merge_contact(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    body: Body<MergeRequest>,
) -> Result<Json<Contact>, ApiError> {
    Ok(Json(contacts::merge(&core.db, &ctx.scope, id, body.value).await?))
}

/// Companies: filters, custom-field filters, search (`q`: names and domains) and any offered
/// sort, in keyset pages.
#[utoipa::path(get, path = "/crm/companies", tag = TAG, security(("bearer" = [])), params(TenantHeader, PageParams, CompanyListParams),
    responses((status = 200, body = ResultPage<Company>), TenantProblems, ListProblems))]
async fn list_companies(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<CompanyListParams>,
) -> Result<Json<ResultPage<Company>>, ApiError> {
    Ok(Json(companies::list(&core.db, &ctx.scope, params).await?))
}

/// Create a company (member). A domain is unique per tenant (409 `domain_exists`). Honours
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/crm/companies", tag = TAG, security(("bearer" = [])), request_body = CompanyInput,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Company), Conflict, TenantProblems, BodyProblems))]
async fn create_company(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    idem: RawIdempotencyKey,
    body: Body<CompanyInput>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /crm/companies", &body.raw)?;
    Ok(replayed_or(
        companies::create(&core.db, &ctx.scope, body.value, key.as_ref()).await?,
    ))
}

/// A company with its people and the newest entries of its timeline.
#[utoipa::path(get, path = "/crm/companies/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = CompanyDetail, headers(("ETag" = String))), NotFound, TenantProblems))]
async fn get_company(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Response, ApiError> {
    let detail = companies::get(&core.db, &ctx.scope, id).await?;
    Ok(([etag(detail.company.version)], Json(detail)).into_response())
}

/// Change a company (member): a JSON merge patch, validated as a whole; `If-Match` optional.
#[utoipa::path(patch, path = "/crm/companies/{id}", tag = TAG, security(("bearer" = [])),
    request_body(content = Object, content_type = "application/merge-patch+json", description = "Fields of CompanyInput to change"),
    params(TenantHeader, ("id" = Uuid, Path), IfMatchHeader),
    responses((status = 200, body = Company, headers(("ETag" = String))), NotFound, Conflict, PreconditionFailed,
        TenantProblems, BodyProblems))]
async fn update_company(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
    IfMatch(version): IfMatch,
    body: Body<Value>,
) -> Result<Response, ApiError> {
    let company = companies::update(&core.db, &ctx.scope, id, body.value, version).await?;
    Ok(([etag(company.version)], Json(company)).into_response())
}

/// Delete a company (member); its contacts stay, unlinked.
#[utoipa::path(delete, path = "/crm/companies/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 204), NotFound, TenantProblems))]
async fn delete_company(
    State(core): State<Core>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    companies::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FieldParams {
    /// Only the fields of `contact` or `company`.
    #[param(value_type = Option<Entity>)]
    pub entity: Option<Entity>,
}

/// The tenant's custom-field definitions.
#[utoipa::path(get, path = "/crm/custom-fields", tag = TAG, security(("bearer" = [])), params(TenantHeader, FieldParams),
    responses((status = 200, body = Vec<CustomField>), TenantProblems, ListProblems))]
async fn list_fields(
    State(core): State<Core>,
    ctx: TenantCtx<min::Viewer>,
    Params(params): Params<FieldParams>,
) -> Result<Json<Vec<CustomField>>, ApiError> {
    Ok(Json(fields::list(&core.db, &ctx.scope, params.entity).await?))
}

/// Define a custom field (admin): `text`, `number`, `date`, `boolean` or `select` (with its
/// options). At most 100 per entity.
#[utoipa::path(post, path = "/crm/custom-fields", tag = TAG, security(("bearer" = [])), request_body = NewCustomField,
    params(TenantHeader),
    responses((status = 201, body = CustomField), Conflict, TenantProblems, BodyProblems))]
async fn create_field(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    body: Body<NewCustomField>,
) -> Result<Response, ApiError> {
    let field = fields::create(&core.db, &ctx.scope, body.value).await?;
    Ok((StatusCode::CREATED, Json(field)).into_response())
}

/// Delete a custom field (admin) and its values from every record.
#[utoipa::path(delete, path = "/crm/custom-fields/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 204), NotFound, TenantProblems))]
async fn delete_field(
    State(core): State<Core>,
    ctx: TenantCtx<min::Admin>,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    fields::delete(&core.db, &ctx.scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start an import (member): where to PUT the CSV file (at most 100 MiB), for 15 minutes.
/// Then `POST /crm/imports` with the `upload_key`.
#[utoipa::path(post, path = "/crm/imports/uploads", tag = TAG, security(("bearer" = [])), request_body = NewUpload,
    params(TenantHeader),
    responses((status = 201, body = Upload), TenantProblems, BodyProblems))]
async fn create_upload(
    State(state): State<CrmState>,
    ctx: TenantCtx<min::Member>,
    body: Body<NewUpload>,
) -> Result<Response, ApiError> {
    let upload = files::upload(&state.files, &ctx.scope, &body.value).await?;
    Ok((StatusCode::CREATED, Json(upload)).into_response())
}

/// The tenant's imports, newest first (at most 50).
#[utoipa::path(get, path = "/crm/imports", tag = TAG, security(("bearer" = [])), params(TenantHeader),
    responses((status = 200, body = Vec<Import>), TenantProblems))]
async fn list_imports(State(core): State<Core>, ctx: TenantCtx<min::Viewer>) -> Result<Json<Vec<Import>>, ApiError> {
    Ok(Json(imports::list(&core.db, &ctx.scope).await?))
}

/// Import contacts or companies (member) from an uploaded CSV (`source: "csv"`, the default) or
/// from Zoho CRM (`source: "zoho"`: its Contacts or Accounts module, with the tenant's `zoho`
/// connector). A CSV's header is read now: a file that is not UTF-8 CSV, or a mapping naming a
/// column the file lacks, answers 422; so does a Zoho import without a Zoho connector. Columns
/// (Zoho: fields' API names) map to fields by their names unless `mapping` says otherwise. The
/// rows are applied by the worker; follow `GET /crm/imports/{id}`. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/crm/imports", tag = TAG, security(("bearer" = [])), request_body = NewImport,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Import), TenantProblems, BodyProblems))]
async fn create_import(
    State(state): State<CrmState>,
    ctx: TenantCtx<min::Member>,
    idem: RawIdempotencyKey,
    body: Body<NewImport>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /crm/imports", &body.raw)?;
    let outcome = files::start_import(&state.core.db, &state.files, &ctx.scope, body.value, key.as_ref()).await?;
    Ok(replayed_or(outcome))
}

/// An import's progress (rows done of total; created, updated, skipped, failed), its first
/// failed rows, and once it ended a link to a CSV of every failed row.
#[utoipa::path(get, path = "/crm/imports/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Import), NotFound, TenantProblems))]
async fn get_import(
    State(state): State<CrmState>,
    ctx: TenantCtx<min::Viewer>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Import>, ApiError> {
    Ok(Json(files::import(&state.core.db, &state.files, &ctx.scope, id).await?))
}

/// Export contacts or companies as CSV (member): `filters` are the list's parameters. The worker
/// writes the file; `GET /crm/exports/{id}` then gives the download link. Honours
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/crm/exports", tag = TAG, security(("bearer" = [])), request_body = NewExport,
    params(TenantHeader, IdempotencyHeader),
    responses((status = 201, body = Export), TenantProblems, BodyProblems))]
async fn create_export(
    State(state): State<CrmState>,
    ctx: TenantCtx<min::Member>,
    idem: RawIdempotencyKey,
    body: Body<NewExport>,
) -> Result<Response, ApiError> {
    let key = idem.with_request("POST /crm/exports", &body.raw)?;
    let outcome = files::start_export(&state.core.db, &state.files, &ctx.scope, body.value, key.as_ref()).await?;
    Ok(replayed_or(outcome))
}

/// An export's state; when completed, `download_url` (valid 15 minutes from this answer).
#[utoipa::path(get, path = "/crm/exports/{id}", tag = TAG, security(("bearer" = [])), params(TenantHeader, ("id" = Uuid, Path)),
    responses((status = 200, body = Export), NotFound, TenantProblems))]
async fn get_export(
    State(state): State<CrmState>,
    ctx: TenantCtx<min::Member>,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Export>, ApiError> {
    Ok(Json(files::export(&state.core.db, &state.files, &ctx.scope, id).await?))
}
