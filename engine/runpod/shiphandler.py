"""The generated mothership's handler, added to a build's artifact for RunPod.

A project without a resource flagged `mothership` gets a generated one (`engine.mothership`)
that runs no user code. The local cloud starts it from the runtime directly; upstream's LB
image loads `handler_<FLASH_RESOURCE_NAME>.py` from the artifact, so on RunPod the artifact
needs that file: a copy of the build's tarball with the handler of an LB endpoint without
routes, flagged mothership (its `/manifest` and provisioning come from the runtime).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

from engine.archive import BuildRef
from engine.handlergen import handler_filename, render_handler

__all__ = ["with_mothership_handler"]


def with_mothership_handler(build: BuildRef, name: str, resource_type: str, into: Path) -> BuildRef:
    """`build` whose artifact (a new tarball in `into`) also holds the handler of the generated
    mothership `name`; `build` itself when the mothership is one of its resources."""
    if name in (build.manifest.get("resources") or {}):
        return build
    resource = {
        "resource_type": resource_type,
        "is_load_balanced": True,
        "functions": [],
        "mothership": True,
    }
    filename = handler_filename(name)
    data = render_handler(name, resource).encode()
    target = into / f"{build.archive.name.split('.')[0]}-{name}.tar.gz"
    with tarfile.open(build.archive, "r:*") as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            if member.name.lstrip("./") == filename:
                continue
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(filename)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        out.addfile(info, io.BytesIO(data))
    return replace(build, archive=target)
