-- The contacts list sorted by name orders by lower(last_name || ' ' || first_name): index that
-- expression (the last-name-only index served no query).
CREATE INDEX crm_contacts_name_idx ON crm_contacts (tenant_id, lower(last_name || ' ' || first_name), id);
DROP INDEX crm_contacts_last_name_idx;

-- Typo tolerance (trigram word similarity) applies to names only: on whole `search_text` an
-- email-shaped query is "similar" to every address of the same shape. Emails and domains match
-- as substrings and prefixes.
--
-- The trigram indexes lead with tenant_id (btree_gin): a search names its tenant, and with the
-- tenant in the index the planner takes it instead of scanning the tenant's rows.
CREATE EXTENSION IF NOT EXISTS btree_gin;
ALTER TABLE crm_contacts ADD COLUMN search_name text GENERATED ALWAYS AS (lower(first_name || ' ' || last_name)) STORED;
ALTER TABLE crm_companies ADD COLUMN search_name text GENERATED ALWAYS AS (lower(name)) STORED;
DROP INDEX crm_contacts_search_idx;
DROP INDEX crm_companies_search_idx;
CREATE INDEX crm_contacts_search_idx ON crm_contacts USING gin (tenant_id, search_text gin_trgm_ops);
CREATE INDEX crm_contacts_search_name_idx ON crm_contacts USING gin (tenant_id, search_name gin_trgm_ops);
CREATE INDEX crm_companies_search_idx ON crm_companies USING gin (tenant_id, search_text gin_trgm_ops);
CREATE INDEX crm_companies_search_name_idx ON crm_companies USING gin (tenant_id, search_name gin_trgm_ops);

-- Search candidates. Under row-level security the planner may not evaluate LIKE or the trigram
-- operators (not leakproof) before the tenant policy, so no trigram index could serve a search
-- run as portal_app. This narrow SECURITY DEFINER function answers only ids of the current
-- tenant (its explicit tenant predicates replace the policy), with every branch on an index; the
-- caller then reads those rows under RLS as usual.
CREATE FUNCTION app_crm_search(p_entity text, p_q text, p_anywhere text)
RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT x.id FROM crm_contacts x
     WHERE p_entity = 'contact' AND x.tenant_id = app_current_tenant() AND x.search_text LIKE p_anywhere
    UNION
    SELECT x.id FROM crm_contacts x
     WHERE p_entity = 'contact' AND x.tenant_id = app_current_tenant() AND x.search_name %> p_q
    UNION
    SELECT x.id FROM crm_contacts x JOIN crm_companies y ON y.id = x.company_id
     WHERE p_entity = 'contact' AND x.tenant_id = app_current_tenant() AND y.tenant_id = app_current_tenant()
       AND (y.search_text LIKE p_anywhere OR y.search_name %> p_q)
    UNION
    SELECT y.id FROM crm_companies y
     WHERE p_entity = 'company' AND y.tenant_id = app_current_tenant() AND y.search_text LIKE p_anywhere
    UNION
    SELECT y.id FROM crm_companies y
     WHERE p_entity = 'company' AND y.tenant_id = app_current_tenant() AND y.search_name %> p_q
$$;
REVOKE ALL ON FUNCTION app_crm_search(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_crm_search(text, text, text) TO portal_app;
