"""Importing this module registers every job handler of the store."""

from zaima.store import delivery, expiry, payments, refunds, suppliers  # noqa: F401
