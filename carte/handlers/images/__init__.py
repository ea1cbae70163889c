"""Images: the local store (`images`), registries (`registry`: pull, push, login), archives
(`archives`: save, load, export, commit, history, prune, disk usage) and builds (`build`).
"""

from carte.handlers.images._archives import ArchivesHandler
from carte.handlers.images._build import BuildHandler
from carte.handlers.images._handler import ImagesHandler
from carte.handlers.images._registry import RegistryHandler

__all__ = [
    "ArchivesHandler",
    "BuildHandler",
    "ImagesHandler",
    "RegistryHandler",
]
