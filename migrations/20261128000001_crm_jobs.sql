-- CRM, part 4: imports (a CSV uploaded to S3) and exports (a CSV written to S3), run by the
-- `crm-import` worker from the queue.
--
-- An import commits in chunks: a chunk's records, its row errors and the job's progress
-- (`byte_offset`, the position in the file after the chunk's last row, and the counters) in one
-- transaction. A run that dies restarts at `byte_offset`: nothing is applied twice, nothing lost.

CREATE TABLE crm_imports (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entity            text NOT NULL CHECK (entity IN ('contacts', 'companies')),
    source            text NOT NULL CHECK (source IN ('csv')),
    object_key        text NOT NULL,
    file_name         text CHECK (char_length(file_name) <= 255),
    -- The file's header row and, per column position, the field it fills (null: ignored).
    header            text[] NOT NULL,
    mapping           jsonb NOT NULL,
    dedupe            text NOT NULL CHECK (dedupe IN ('skip', 'update', 'create')),
    status            text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    byte_offset       bigint NOT NULL DEFAULT 0 CHECK (byte_offset >= 0),
    -- The file's line number at byte_offset (rows can span lines: quoted line breaks).
    line_offset       bigint NOT NULL DEFAULT 1 CHECK (line_offset >= 1),
    rows_total        bigint CHECK (rows_total >= 0),
    rows_done         bigint NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
    created_count     bigint NOT NULL DEFAULT 0,
    updated_count     bigint NOT NULL DEFAULT 0,
    skipped_count     bigint NOT NULL DEFAULT 0,
    failed_count      bigint NOT NULL DEFAULT 0,
    companies_created bigint NOT NULL DEFAULT 0,
    error             text,
    -- The rows not imported as a CSV in the bucket, written when the import ends.
    errors_key        text,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_imports_tenant_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX crm_imports_list_idx ON crm_imports (tenant_id, created_at DESC, id DESC);
CREATE INDEX crm_imports_pending_idx ON crm_imports (updated_at) WHERE status IN ('queued', 'running');

-- A row that was not imported: its data row number (1 = the first row after the header), the
-- line it starts on, the fields at fault and why, and the row as it was (shortened).
CREATE TABLE crm_import_errors (
    tenant_id uuid NOT NULL,
    import_id uuid NOT NULL,
    row_number bigint NOT NULL,
    line       bigint NOT NULL,
    fields     text NOT NULL,
    message    text NOT NULL,
    raw        text NOT NULL,
    PRIMARY KEY (import_id, row_number),
    CONSTRAINT crm_import_errors_import_fk FOREIGN KEY (tenant_id, import_id)
        REFERENCES crm_imports (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE crm_exports (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entity      text NOT NULL CHECK (entity IN ('contacts', 'companies')),
    filters     jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    rows        bigint CHECK (rows >= 0),
    bytes       bigint CHECK (bytes >= 0),
    object_key  text,
    error       text,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_exports_list_idx ON crm_exports (tenant_id, created_at DESC, id DESC);
CREATE INDEX crm_exports_pending_idx ON crm_exports (updated_at) WHERE status IN ('queued', 'running');

GRANT SELECT, INSERT, UPDATE, DELETE ON crm_imports, crm_import_errors, crm_exports TO portal_app;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['crm_imports', 'crm_import_errors', 'crm_exports'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I TO portal_app USING (tenant_id = app_current_tenant()) '
                       'WITH CHECK (tenant_id = app_current_tenant())', t || '_tenant', t);
        EXECUTE format('CREATE POLICY %I ON %I TO %I USING (true) WITH CHECK (true)', t || '_owner', t, current_user);
    END LOOP;
END
$$;

-- The worker's sweep (scheduled): jobs of any tenant still queued or running without progress
-- for `p_idle`, i.e. whose queue message was lost or whose run died for good. It answers ids
-- only; the job itself is then read and run under its tenant.
CREATE FUNCTION app_crm_stalled_jobs(p_idle interval)
RETURNS TABLE (kind text, tenant_id uuid, id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT 'import', i.tenant_id, i.id FROM crm_imports i
     WHERE i.status IN ('queued', 'running') AND i.updated_at < now() - p_idle
    UNION ALL
    SELECT 'export', e.tenant_id, e.id FROM crm_exports e
     WHERE e.status IN ('queued', 'running') AND e.updated_at < now() - p_idle
    LIMIT 100
$$;
REVOKE ALL ON FUNCTION app_crm_stalled_jobs(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_crm_stalled_jobs(interval) TO portal_app;
