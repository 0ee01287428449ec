"""Fixtures shared by all tests."""

from support import database_url

__all__ = ["database_url"]
