"""Carte: a container engine and small orchestrator in one Python executable."""

__version__ = "0.1.0"
API_VERSION = "1"
