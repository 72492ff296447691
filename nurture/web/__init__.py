"""`nurture serve`: one-click unsubscribe pages and signed webhooks."""
