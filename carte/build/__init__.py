"""carte.build: Dockerfiles and the builder, a layer above `carte.image` and `carte.runtime`.

`dockerfile` parses a Dockerfile into instructions; `build` runs them stage by stage (RUN steps in
containers made by the runtime, COPY/ADD from the synchronized context) and stores the result in
the image store; `BuildCache` keeps the step cache. The build context is synchronized from the
client by content hash (`_context`). A synchronous library: the build handler calls it from a
worker thread.
"""

from carte.build._cache import BuildCache
from carte.build._context import (
    BuildInputs,
    ContextEntry,
    ContextError,
    apply_upload,
    decode_upload_header,
    manifest_path,
    needed_files,
)
from carte.build._image import BuildEnvironment, BuildOptions, build
from carte.build._network import Attached
from carte.build.dockerfile import Dockerfile, DockerfileError, Instruction, parse

__all__ = [
    "Attached",
    "BuildCache",
    "BuildEnvironment",
    "BuildInputs",
    "BuildOptions",
    "ContextEntry",
    "ContextError",
    "Dockerfile",
    "DockerfileError",
    "Instruction",
    "apply_upload",
    "build",
    "decode_upload_header",
    "manifest_path",
    "needed_files",
    "parse",
]
