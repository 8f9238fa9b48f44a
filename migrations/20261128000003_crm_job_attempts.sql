-- CRM jobs, after review: a job that keeps failing without progress is given up (attempts,
-- reset by every committed chunk), the sweep takes the longest-stalled jobs first, and company
-- names compare with Postgres's lower() on both sides (Rust's to_lowercase differs outside ASCII).

ALTER TABLE crm_imports ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE crm_exports ADD COLUMN attempts integer NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION app_crm_stalled_jobs(p_idle interval)
RETURNS TABLE (kind text, tenant_id uuid, id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT j.kind, j.tenant_id, j.id FROM (
        SELECT 'import' AS kind, i.tenant_id, i.id, i.updated_at FROM crm_imports i
         WHERE i.status IN ('queued', 'running') AND i.updated_at < now() - p_idle
        UNION ALL
        SELECT 'export', e.tenant_id, e.id, e.updated_at FROM crm_exports e
         WHERE e.status IN ('queued', 'running') AND e.updated_at < now() - p_idle
    ) j
    ORDER BY j.updated_at
    LIMIT 100
$$;

CREATE OR REPLACE FUNCTION app_crm_companies_by_key(p_keys text[])
RETURNS TABLE (key text, id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT k.key, m.id
      FROM unnest(p_keys) AS k(key)
      CROSS JOIN LATERAL (
          SELECT co.id FROM crm_companies co
           WHERE k.key LIKE 'd:%' AND co.tenant_id = app_current_tenant() AND co.domain IS NOT NULL
             AND lower(co.domain) = lower(substr(k.key, 3))
          UNION ALL
          (SELECT co.id FROM crm_companies co
            WHERE k.key LIKE 'n:%' AND co.tenant_id = app_current_tenant()
              AND lower(co.name) = lower(substr(k.key, 3))
            ORDER BY co.created_at, co.id LIMIT 1)
          LIMIT 1) AS m
$$;
