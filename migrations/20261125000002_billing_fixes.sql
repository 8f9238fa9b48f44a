-- Billing, after review: reconciliation runs count the items they could not apply, and the
-- policies of the child mirrors name their own table's column explicitly (an unqualified name
-- would silently bind to a same-named column added to the parent later).
ALTER TABLE billing_reconcile_runs ADD COLUMN failures integer NOT NULL DEFAULT 0;

DROP POLICY stripe_subscription_items_app ON stripe_subscription_items;
CREATE POLICY stripe_subscription_items_app ON stripe_subscription_items FOR SELECT TO portal_app
    USING (EXISTS (SELECT 1 FROM stripe_subscriptions s WHERE s.id = stripe_subscription_items.subscription_id));
DROP POLICY stripe_invoice_lines_app ON stripe_invoice_lines;
CREATE POLICY stripe_invoice_lines_app ON stripe_invoice_lines FOR SELECT TO portal_app
    USING (EXISTS (SELECT 1 FROM stripe_invoices i WHERE i.id = stripe_invoice_lines.invoice_id));
