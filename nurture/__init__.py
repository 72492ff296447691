"""nurture: personal, spaced emails to referral sources that stop on a reply or a referral."""
