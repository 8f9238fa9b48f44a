-- WooCommerce sync passes saved before the next-page fix may hold a next page that asks
-- `per_page=200` (the old code rewrote the text `page=1` inside `per_page=100`), which
-- WooCommerce refuses. Those passes start over from their watermark: writes are newest-wins, so
-- reading pages again changes nothing.

UPDATE connector_sync_state SET next_page = NULL
WHERE kind = 'woocommerce' AND next_page LIKE '%per\_page=200%';
