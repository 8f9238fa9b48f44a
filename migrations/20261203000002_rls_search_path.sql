-- The helpers row-level security calls resolve names with a pinned search_path (pg_temp last),
-- and the application roles cannot create temporary objects: otherwise a session could create
-- a temp table named like a real one (`billing_accounts`), which pg_temp — searched first by
-- default — would put in front of the real table inside app_current_customer(), making another
-- tenant's invoices visible.
ALTER FUNCTION app_current_tenant() SET search_path = public, pg_temp;
ALTER FUNCTION app_current_user() SET search_path = public, pg_temp;
ALTER FUNCTION app_current_principal() SET search_path = public, pg_temp;

CREATE OR REPLACE FUNCTION app_current_customer() RETURNS text
    LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
        SELECT stripe_customer_id FROM public.billing_accounts WHERE tenant_id = public.app_current_tenant() $$;

-- Every other function of ours that lacks a pinned path gets one (none should; this makes it so).
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'app\_%'
          AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) c WHERE c LIKE 'search_path=%')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = public, pg_temp', f);
    END LOOP;
END
$$;

-- TEMP is granted to PUBLIC by default: take it from everyone but the schema owner.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM portal_app, portal_billing', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), current_user);
END
$$;
