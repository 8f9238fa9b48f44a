-- Platform: tenants, users, memberships, invitations, API keys, audit log, idempotency keys,
-- and the row-level-security roles and policies every later tenant table follows.
--
-- Runs as the schema owner (portal_owner locally). The application connects as `portal_app`,
-- which owns nothing, cannot bypass RLS, and only sees rows of the tenant set with
-- `set_config('app.tenant_id', ..., true)` inside its transaction (shared::adapters::pg).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'portal_app') THEN
        CREATE ROLE portal_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO portal_app;

-- The request's tenant, user and principal, as set by the tenant-scoped transaction.
CREATE FUNCTION app_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;
CREATE FUNCTION app_current_user() RETURNS uuid
    LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;
CREATE FUNCTION app_current_principal() RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.principal', true), '') $$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1
);

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subject     text NOT NULL CONSTRAINT users_subject_key UNIQUE,
    email       text NOT NULL,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1
);

CREATE TABLE memberships (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    version     integer NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE invitations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email       text NOT NULL,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash  bytea NOT NULL CONSTRAINT invitations_token_key UNIQUE,
    invited_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid REFERENCES users (id) ON DELETE SET NULL,
    revoked_at  timestamptz
);
-- One open invitation per address and tenant; a new one replaces the old (the service revokes it).
CREATE UNIQUE INDEX invitations_open_email_key ON invitations (tenant_id, lower(email))
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
CREATE INDEX invitations_tenant_created_idx ON invitations (tenant_id, created_at DESC, id DESC);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL,
    secret_hash  bytea NOT NULL CONSTRAINT api_keys_secret_key UNIQUE,
    role         text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    scopes       text[] NOT NULL,
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant_created_idx ON api_keys (tenant_id, created_at DESC, id DESC);

CREATE TABLE audit_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    actor_user_id    uuid,
    actor_api_key_id uuid,
    action           text NOT NULL,
    target_type      text NOT NULL,
    target_id        text NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}',
    request_id       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_id_idx ON audit_log (tenant_id, id DESC);

CREATE TABLE idempotency_keys (
    principal    text NOT NULL,
    key          text NOT NULL,
    tenant_id    uuid,
    request_hash bytea NOT NULL,
    status_code  integer,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

-- Row-level security. The app role gets policies; the owner (who runs migrations and owns the
-- SECURITY DEFINER lookups below) gets an explicit full-access policy, since FORCE applies to it.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenants_read ON tenants FOR SELECT TO portal_app USING (
    id = app_current_tenant()
    OR EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = tenants.id AND m.user_id = app_current_user()));
CREATE POLICY tenants_insert ON tenants FOR INSERT TO portal_app WITH CHECK (id = app_current_tenant());
CREATE POLICY tenants_update ON tenants FOR UPDATE TO portal_app
    USING (id = app_current_tenant()) WITH CHECK (id = app_current_tenant());

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_read ON memberships FOR SELECT TO portal_app
    USING (tenant_id = app_current_tenant() OR user_id = app_current_user());
CREATE POLICY memberships_write ON memberships FOR ALL TO portal_app
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_read ON users FOR SELECT TO portal_app USING (
    id = app_current_user()
    OR EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id AND m.tenant_id = app_current_tenant()));
CREATE POLICY users_update_self ON users FOR UPDATE TO portal_app
    USING (id = app_current_user()) WITH CHECK (id = app_current_user());

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_own ON idempotency_keys FOR ALL TO portal_app
    USING (principal = app_current_principal()) WITH CHECK (principal = app_current_principal());

-- The standard tenant policy: rows of the transaction's tenant only, for every command.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['invitations', 'api_keys', 'audit_log'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR ALL TO portal_app USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['tenants', 'users', 'memberships', 'invitations', 'api_keys', 'audit_log', 'idempotency_keys'] LOOP
        EXECUTE format('CREATE POLICY %I ON %I FOR ALL TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, users, memberships, invitations, api_keys, idempotency_keys TO portal_app;
-- The audit log is append-only for the application.
GRANT SELECT, INSERT ON audit_log TO portal_app;

-- Authentication lookups that must run before a tenant is known. SECURITY DEFINER, narrow,
-- with a fixed search_path; the app role may only EXECUTE them.

-- A verified JWT subject -> the user's id (created on first sight), and, for the wanted tenant
-- (or the only one when none is named), the membership role. role is null when not a member.
CREATE FUNCTION app_auth_user(p_subject text, p_email text, p_name text, p_tenant uuid)
RETURNS TABLE (user_id uuid, tenant_id uuid, role text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE v_user uuid;
BEGIN
    SELECT u.id INTO v_user FROM users u WHERE u.subject = p_subject;
    IF v_user IS NULL THEN
        INSERT INTO users (subject, email, name) VALUES (p_subject, p_email, coalesce(p_name, ''))
        ON CONFLICT (subject) DO UPDATE SET email = excluded.email
        RETURNING id INTO v_user;
    ELSIF p_email IS NOT NULL AND p_email <> '' THEN
        UPDATE users u SET email = p_email, updated_at = now()
        WHERE u.id = v_user AND u.email IS DISTINCT FROM p_email;
    END IF;
    IF p_tenant IS NOT NULL THEN
        RETURN QUERY SELECT v_user, p_tenant, m.role FROM (SELECT 1) one
            LEFT JOIN memberships m ON m.tenant_id = p_tenant AND m.user_id = v_user;
    ELSE
        RETURN QUERY SELECT v_user, m.tenant_id, m.role FROM (SELECT 1) one
            LEFT JOIN (SELECT x.tenant_id, x.role FROM memberships x WHERE x.user_id = v_user
                       AND (SELECT count(*) FROM memberships y WHERE y.user_id = v_user) = 1) m ON true;
    END IF;
END
$$;

-- An API key's SHA-256 -> its tenant, role and scopes, when live; marks it used (at most once a minute).
CREATE FUNCTION app_auth_api_key(p_hash bytea)
RETURNS TABLE (key_id uuid, tenant_id uuid, role text, scopes text[], created_by uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE api_keys k SET last_used_at = now()
    WHERE k.secret_hash = p_hash AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
      AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute');
    RETURN QUERY SELECT k.id, k.tenant_id, k.role, k.scopes, k.created_by FROM api_keys k
    WHERE k.secret_hash = p_hash AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now());
END
$$;

-- An invitation token's hash -> the invitation, for the accepting user (no tenant yet).
CREATE FUNCTION app_find_invitation(p_hash bytea)
RETURNS TABLE (id uuid, tenant_id uuid, email text, role text, expires_at timestamptz,
               accepted_at timestamptz, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT i.id, i.tenant_id, i.email, i.role, i.expires_at, i.accepted_at, i.revoked_at
    FROM invitations i WHERE i.token_hash = p_hash
$$;

REVOKE ALL ON FUNCTION app_auth_user(text, text, text, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_auth_api_key(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION app_find_invitation(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_auth_user(text, text, text, uuid) TO portal_app;
GRANT EXECUTE ON FUNCTION app_auth_api_key(bytea) TO portal_app;
GRANT EXECUTE ON FUNCTION app_find_invitation(bytea) TO portal_app;
