//! The one door of the pages and posts routes: each operation decides once whether the
//! tenant's posts are a connected WordPress site's (`wordpress`) or the portal's own (`items`),
//! so no handler repeats that choice.
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::items::{self, ContentKind, Item, ItemListParams, ItemSummary, NewItem, PublishRequest, UnpublishRequest};
use crate::domain::{DomainError, ResultPage, Scope};
use crate::services::providers::wordpress::{Connected, Wordpress};

#[derive(Clone)]
pub struct Content {
    pub db: PgPool,
    /// `None` where no connector service is configured (the pages function): everything is
    /// the portal's own.
    pub wordpress: Option<Wordpress>,
}

impl Content {
    /// The tenant's WordPress site, when `kind`'s items are its posts.
    async fn connected(&self, scope: &Scope, kind: ContentKind) -> Result<Option<Connected<'_>>, DomainError> {
        match &self.wordpress {
            Some(wp) => wp.connected(&self.db, scope, kind).await,
            None => Ok(None),
        }
    }

    pub async fn list(
        &self,
        scope: &Scope,
        kind: ContentKind,
        params: ItemListParams,
    ) -> Result<ResultPage<ItemSummary>, DomainError> {
        match self.connected(scope, kind).await? {
            Some(wp) => wp.list(&self.db, scope, params).await,
            None => items::list(&self.db, scope, kind, params).await,
        }
    }

    pub async fn create(&self, scope: &Scope, kind: ContentKind, input: NewItem) -> Result<Item, DomainError> {
        match self.connected(scope, kind).await? {
            Some(wp) => wp.create(&self.db, scope, input).await,
            None => items::create(&self.db, scope, kind, input).await,
        }
    }

    pub async fn update(
        &self,
        scope: &Scope,
        kind: ContentKind,
        id: Uuid,
        patch: Value,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        match self.connected(scope, kind).await? {
            Some(wp) => wp.update(&self.db, scope, id, patch, if_match).await,
            None => items::update(&self.db, scope, kind, id, patch, if_match).await,
        }
    }

    pub async fn delete(&self, scope: &Scope, kind: ContentKind, id: Uuid) -> Result<(), DomainError> {
        match self.connected(scope, kind).await? {
            Some(wp) => wp.delete(&self.db, scope, id).await,
            None => items::delete(&self.db, scope, kind, id).await,
        }
    }

    pub async fn publish(
        &self,
        scope: &Scope,
        kind: ContentKind,
        id: Uuid,
        request: PublishRequest,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        match self.connected(scope, kind).await? {
            Some(wp) => wp.publish(&self.db, scope, id, request, if_match).await,
            None => items::publish(&self.db, scope, kind, id, request, if_match).await,
        }
    }

    pub async fn unpublish(
        &self,
        scope: &Scope,
        kind: ContentKind,
        id: Uuid,
        request: UnpublishRequest,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        match self.connected(scope, kind).await? {
            Some(wp) => wp.unpublish(&self.db, scope, id, request, if_match).await,
            None => items::unpublish(&self.db, scope, kind, id, request, if_match).await,
        }
    }

    pub async fn restore(
        &self,
        scope: &Scope,
        kind: ContentKind,
        id: Uuid,
        number: i32,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        match self.connected(scope, kind).await? {
            Some(wp) => wp.restore(&self.db, scope, id, number, if_match).await,
            None => items::restore(&self.db, scope, kind, id, number, if_match).await,
        }
    }
}
