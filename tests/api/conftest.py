"""Fixtures for API tests: real daemon subprocesses (see carte_daemon.py)."""

from carte_daemon import daemons, plugin_daemons, sample_plugin_dir

__all__ = ["daemons", "plugin_daemons", "sample_plugin_dir"]
