"""Fixtures: real daemon subprocesses, shared from tests/api/carte_daemon.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from carte_daemon import daemons, plugin_daemons, sample_plugin_dir

__all__ = ["daemons", "plugin_daemons", "sample_plugin_dir"]
