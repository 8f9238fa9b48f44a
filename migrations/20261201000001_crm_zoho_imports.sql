-- CRM imports from Zoho CRM (API v2, with the tenant's `zoho` connector): no file, so no
-- object key; `byte_offset` counts the module's pages committed (a page of 200 records is a
-- chunk) and `line_offset` is the next record's number.

ALTER TABLE crm_imports DROP CONSTRAINT crm_imports_source_check;
ALTER TABLE crm_imports ADD CONSTRAINT crm_imports_source_check CHECK (source IN ('csv', 'zoho'));
ALTER TABLE crm_imports ALTER COLUMN object_key DROP NOT NULL;
ALTER TABLE crm_imports ADD CONSTRAINT crm_imports_object_key_check
    CHECK ((source = 'csv') = (object_key IS NOT NULL));
