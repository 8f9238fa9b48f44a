-- A library item stays `pending` only while its upload can still arrive and be checked: the
-- upload link lasts 15 minutes and media-processor's retries end within an hour
-- (MaximumEventAgeInSeconds). An item still pending after that — nothing was uploaded, or every
-- try to check it failed and its event went to the dead-letter queue — is rejected with the
-- reason, by the content scheduler's run (shared::services::cms::media::give_up_stale); its
-- unchecked upload expires with the bucket's lifecycle rule for uploads/.
CREATE FUNCTION app_cms_media_give_up(p_before timestamptz, p_reason text, p_limit integer)
RETURNS TABLE (tenant_id uuid, media_id uuid)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH stale AS (
        SELECT id FROM public.cms_media
        WHERE status = 'pending' AND created_at < p_before
        ORDER BY created_at LIMIT p_limit FOR UPDATE SKIP LOCKED
    )
    UPDATE public.cms_media m SET status = 'rejected', reject_reason = p_reason, updated_at = now()
    FROM stale WHERE m.id = stale.id
    RETURNING m.tenant_id, m.id
$$;
REVOKE ALL ON FUNCTION app_cms_media_give_up(timestamptz, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_cms_media_give_up(timestamptz, text, integer) TO portal_app;
