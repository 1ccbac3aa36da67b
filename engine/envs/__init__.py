"""Per-endpoint environments of the local cloud: what each holds (`contents`), the user's
package-index settings as uv options (`indexes`) and the shared cache built with uv (`cache`).
The deploy step that uses them is `engine.env_step`."""

from engine.envs.cache import ENV_CACHE_ENV, EnvCache, EnvError, Environment, env_cache_dir
from engine.envs.contents import (
    GPU_TORCH_ENV,
    EnvContents,
    ProjectRequirements,
    endpoint_contents,
    project_requirements,
)

__all__ = [
    "ENV_CACHE_ENV",
    "GPU_TORCH_ENV",
    "EnvCache",
    "EnvContents",
    "EnvError",
    "Environment",
    "ProjectRequirements",
    "endpoint_contents",
    "env_cache_dir",
    "project_requirements",
]
