"""Images: the local store (`images`), registries (`registry`: pull, push, login), archives
(`archives`: save, load, export, commit, history, prune, disk usage) and builds (`build`).
"""

from carte.handlers.images._archives import ArchivesHandler
from carte.handlers.images._build import BuildHandler
from carte.handlers.images._build_routes import add_build_routes
from carte.handlers.images._handler import ImagesHandler
from carte.handlers.images._registry import RegistryHandler
from carte.handlers.images._routes import register_image_routes

__all__ = [
    "ArchivesHandler",
    "BuildHandler",
    "ImagesHandler",
    "RegistryHandler",
    "add_build_routes",
    "register_image_routes",
]
