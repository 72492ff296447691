"""Helpers for the fault tests (tests/test_faults.py): real worker processes, a seeded project,
and the checks that compare what the SMTP server received with what the database says."""
