-- Zoho CRM imports remember the highest record id imported. Records are read in id order by
-- page number; a record deleted in Zoho from a page already read moves the unread ones back a
-- place, and the id tells the worker that the page before holds records it has not read.

ALTER TABLE crm_imports ADD COLUMN source_cursor text;
