"""Building a Flash project, and knowing when the last build can be reused.

- `project`: `build_project()`, the seven build steps that write `.flash/.build/` and the archive
  (step 2 in `deps`, step 3 in `files`; the paths and types they share in `model`);
- `current`: `build_is_fresh()` and `current_build()`, the one path the TUI's build key and a
  deploy's implicit build both take (reuse a fresh build, or build, with `BuildProgress` events).
"""

from engine.build import model
from engine.build.current import CurrentBuild, build_is_fresh, current_build
from engine.build.deps import collect_requirements
from engine.build.files import collect_files
from engine.build.model import *  # noqa: F403 -- the package's names include its model's, all
from engine.build.project import build_project, generated_at

__all__ = [
    *model.__all__,
    "CurrentBuild",
    "build_is_fresh",
    "build_project",
    "collect_files",
    "collect_requirements",
    "current_build",
    "generated_at",
]
