-- Hardening after review (see the platform migration for the model).

-- Nobody but the owner creates objects in public (the default from Postgres 15; explicit for
-- older servers such as some Aurora/RDS versions).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- A user's own memberships and tenants in OTHER tenants are visible only when no tenant is set
-- (listing "my tenants"): inside a tenant's transaction, a query that forgets its tenant filter
-- sees that tenant alone.
DROP POLICY memberships_read ON memberships;
CREATE POLICY memberships_read ON memberships FOR SELECT TO portal_app USING (
    tenant_id = app_current_tenant()
    OR (app_current_tenant() IS NULL AND user_id = app_current_user()));
DROP POLICY tenants_read ON tenants;
CREATE POLICY tenants_read ON tenants FOR SELECT TO portal_app USING (
    id = app_current_tenant()
    OR (app_current_tenant() IS NULL
        AND EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = tenants.id AND m.user_id = app_current_user())));

-- Users may change their profile fields only (not their subject or email, which come from the
-- identity provider).
REVOKE UPDATE ON users FROM portal_app;
GRANT UPDATE (name, version, updated_at) ON users TO portal_app;

-- An API key never outranks its creator as the creator is NOW: the role used is the lesser of the
-- key's and the creator's current membership role, and a key whose creator left (or is unknown)
-- stops working.
CREATE OR REPLACE FUNCTION app_auth_api_key(p_hash bytea)
RETURNS TABLE (key_id uuid, tenant_id uuid, role text, scopes text[], created_by uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE ranks constant text[] := ARRAY['viewer', 'member', 'admin', 'owner'];
BEGIN
    UPDATE api_keys k SET last_used_at = now()
    WHERE k.secret_hash = p_hash AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute');
    RETURN QUERY
    SELECT k.id, k.tenant_id,
           ranks[least(array_position(ranks, k.role), array_position(ranks, m.role))],
           k.scopes, k.created_by
    FROM api_keys k
    JOIN memberships m ON m.tenant_id = k.tenant_id AND m.user_id = k.created_by
    WHERE k.secret_hash = p_hash AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now());
END
$$;
REVOKE ALL ON FUNCTION app_auth_api_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_auth_api_key(bytea) TO portal_app;

-- Idempotency records expire: a key older than a day may be used again (and its stored response,
-- which can hold addresses, does not stay for ever). The service ignores expired ones.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
