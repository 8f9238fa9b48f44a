-- Lookups of the CRM import's dedupe, by case-insensitive email (contacts) and by domain or name
-- (companies). Under row-level security `lower(x) = y` cannot be an index condition (lower() is
-- not leakproof, so the policy's qual must run first): every lookup scanned all of the tenant's
-- rows, quadratic over an import. These SECURITY DEFINER functions take the tenant from the
-- transaction (app_current_tenant(), never a parameter) and probe the unique indexes.

CREATE FUNCTION app_crm_contacts_by_email(p_emails text[])
RETURNS TABLE (email text, id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT e.email, m.id
      FROM unnest(p_emails) AS e(email)
      CROSS JOIN LATERAL (
          SELECT c.id FROM crm_contacts c
           WHERE c.tenant_id = app_current_tenant() AND c.email IS NOT NULL AND lower(c.email) = e.email
           LIMIT 1) AS m
$$;

-- Keys are 'd:<domain>' (lower case) or 'n:<name>' (lower case); a name matches the oldest
-- company of that name.
CREATE FUNCTION app_crm_companies_by_key(p_keys text[])
RETURNS TABLE (key text, id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT k.key, m.id
      FROM unnest(p_keys) AS k(key)
      CROSS JOIN LATERAL (
          SELECT co.id FROM crm_companies co
           WHERE k.key LIKE 'd:%' AND co.tenant_id = app_current_tenant() AND co.domain IS NOT NULL
             AND lower(co.domain) = substr(k.key, 3)
          UNION ALL
          (SELECT co.id FROM crm_companies co
            WHERE k.key LIKE 'n:%' AND co.tenant_id = app_current_tenant() AND lower(co.name) = substr(k.key, 3)
            ORDER BY co.created_at, co.id LIMIT 1)
          LIMIT 1) AS m
$$;

REVOKE ALL ON FUNCTION app_crm_contacts_by_email(text[]), app_crm_companies_by_key(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_crm_contacts_by_email(text[]), app_crm_companies_by_key(text[]) TO portal_app;
