"""Who comes in: contacts and referrals, by hand, from CSV files or webhooks."""
