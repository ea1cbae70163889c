"""Fixtures shared by every test area live in tests/support (see support/__init__.py); areas
keep their own fixtures in tests/<area>/conftest.py."""

pytest_plugins = ["support.fixtures", "support.markers"]
