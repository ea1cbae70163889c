"""Moved to `carte.yaml_bounds` (carte.yaml's loader uses it too; the engine may not import
carte.stack). Kept until every importer uses the new place."""

from carte.yaml_bounds import MAX_ALIASES, MAX_DEPTH, MAX_VALUES, YamlLimitError, load_bounded

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_VALUES", "YamlLimitError", "load_bounded"]
