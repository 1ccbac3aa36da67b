"""Flash apps, environments, builds and artifact uploads of the fake RunPod account.

`FlashBook` implements the flash state operations (flash_facts.md §10.1, runpod_api.md §2.3 and
§5.2) and the presigned upload they hand out. D = documented, Q = inferred:

- D: prepareFlashArtifactUpload -> {uploadUrl, objectKey, expiresAt}; the PUT carries no
  Authorization header, only Content-Type and Content-Length; finalizeFlashArtifactUpload ->
  the build {id, manifest} (T20 selects `resourceSpec`: the same manifest).
- D: deployBuildToEnvironment -> {id, name, activeArtifact{objectKey, downloadUrl, expiresAt}}.
- D: a missing app is an error whose message contains "app not found" (T20 tests for it).
- D: updateFlashBuildManifest replaces the build's manifest (the persisted state clients read).
- D: deleting an app or environment leaves its endpoints running (flash #367).
- Q: tarballs over 1500 MB (FH's client limit) are refused at prepare; an upload URL expires after
  an hour; the PUT's Content-Length must equal the size declared at prepare; finalize needs the
  uploaded object and a gzip tarball with a `flash_manifest.json`.
- Q: app names are unique per account and environment names per app; a new environment's state is
  PENDING and becomes HEALTHY when a build is deployed to it.
"""

from __future__ import annotations

import hmac
import json
import secrets
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fakes.runpod_endpoints import ApiError, new_id, now

MAX_TARBALL_BYTES = 1500 * 1024 * 1024
UPLOAD_TTL_SECONDS = 3600
ENVIRONMENT_STATES = frozenset({"PENDING", "DEPLOYING", "HEALTHY", "UNHEALTHY", "FAILED"})


@dataclass
class FlashBuild:
    """An uploaded, finalized artifact and its (mutable) manifest."""

    id: str
    flashAppId: str
    objectKey: str
    createdAt: str
    manifest: dict[str, Any]
    path: Path


@dataclass
class FlashEnvironment:
    """An environment of an app; `activeBuildId` is the build deployed to it."""

    id: str
    flashAppId: str
    name: str
    createdAt: str
    state: str = "PENDING"
    activeBuildId: str | None = None
    networkVolumeIds: list[str] = field(default_factory=list)


@dataclass
class FlashApp:
    """A flash app."""

    id: str
    name: str
    createdAt: str


@dataclass
class Upload:
    """A presigned upload slot: what prepare declared and, once PUT, where the bytes are."""

    objectKey: str
    flashAppId: str
    size: int
    signature: str
    expires: float
    path: Path
    received: bool = False


class UploadRefused(Exception):
    """A presigned PUT the storage refuses: HTTP status, S3-style code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class FlashBook:
    """The account's flash apps, environments, builds and upload slots."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.apps: dict[str, FlashApp] = {}
        self.environments: dict[str, FlashEnvironment] = {}
        self.builds: dict[str, FlashBuild] = {}
        self.uploads: dict[str, Upload] = {}

    # --- apps and environments ------------------------------------------------------------
    def app(self, app_id: str) -> FlashApp:
        """The app of that id, or the API's "app not found" error."""
        app = self.apps.get(app_id)
        if app is None:
            raise ApiError(f"Flash app not found: {app_id}")
        return app

    def app_by_name(self, name: str) -> FlashApp:
        """The app of that name, or the API's "app not found" error."""
        app = next((a for a in self.apps.values() if a.name == name), None)
        if app is None:
            raise ApiError(f"Flash app not found: {name!r}")
        return app

    def create_app(self, name: str) -> FlashApp:
        """createFlashApp."""
        if not name.strip():
            raise ApiError("Flash app name must not be empty")
        if any(a.name == name for a in self.apps.values()):
            raise ApiError(f"Flash app {name!r} already exists")
        app = FlashApp(id=new_id(20), name=name, createdAt=now())
        self.apps[app.id] = app
        return app

    def environment(self, env_id: str) -> FlashEnvironment:
        """The environment of that id, or an error."""
        env = self.environments.get(env_id)
        if env is None:
            raise ApiError(f"Flash environment not found: {env_id}")
        return env

    def environment_by_name(self, app_id: str, name: str) -> FlashEnvironment:
        """flashEnvironmentByName."""
        self.app(app_id)
        env = next((e for e in self.environments_of(app_id) if e.name == name), None)
        if env is None:
            raise ApiError(f"Flash environment not found: {name!r}")
        return env

    def environments_of(self, app_id: str) -> list[FlashEnvironment]:
        """The environments of an app."""
        return [e for e in self.environments.values() if e.flashAppId == app_id]

    def builds_of(self, app_id: str) -> list[FlashBuild]:
        """The builds of an app."""
        return [b for b in self.builds.values() if b.flashAppId == app_id]

    def create_environment(self, app_id: str, name: str) -> FlashEnvironment:
        """createFlashEnvironment."""
        self.app(app_id)
        if not name.strip():
            raise ApiError("Flash environment name must not be empty")
        if any(e.name == name for e in self.environments_of(app_id)):
            raise ApiError(f"Flash environment {name!r} already exists in this app")
        env = FlashEnvironment(id=new_id(20), flashAppId=app_id, name=name, createdAt=now())
        self.environments[env.id] = env
        return env

    def set_state(self, env_id: str, state: str | None) -> FlashEnvironment:
        """updateFlashEnvironment."""
        env = self.environment(env_id)
        if state is not None:
            if state not in ENVIRONMENT_STATES:
                raise ApiError(f"Invalid environment status {state!r}")
            env.state = state
        return env

    def delete_environment(self, env_id: str) -> FlashEnvironment:
        """deleteFlashEnvironment (its endpoints keep running, as on RunPod)."""
        env = self.environment(env_id)
        del self.environments[env_id]
        return env

    def delete_app(self, app_id: str) -> list[FlashEnvironment]:
        """deleteFlashApp: the app, its environments and builds; returns the environments."""
        self.app(app_id)
        envs = self.environments_of(app_id)
        for env in envs:
            del self.environments[env.id]
        for build in self.builds_of(app_id):
            del self.builds[build.id]
        del self.apps[app_id]
        return envs

    # --- uploads and builds ---------------------------------------------------------------
    def prepare_upload(self, app_id: str, size: int) -> Upload:
        """prepareFlashArtifactUpload: a new upload slot."""
        self.app(app_id)
        if size <= 0:
            raise ApiError(f"tarballSize must be positive, got {size}")
        if size > MAX_TARBALL_BYTES:
            raise ApiError(f"tarballSize {size} exceeds the limit of {MAX_TARBALL_BYTES} bytes")
        key = f"flash/{app_id}/{new_id(16)}.tar.gz"
        slot = Upload(
            objectKey=key,
            flashAppId=app_id,
            size=size,
            signature=secrets.token_urlsafe(24),
            expires=time.time() + UPLOAD_TTL_SECONDS,
            path=self.storage / key.replace("/", "_"),
        )
        self.uploads[key] = slot
        return slot

    def check_put(
        self, key: str, signature: str, authorization: bool, length: str | None
    ) -> Upload:
        """The slot a presigned PUT may write to, or why storage refuses it."""
        slot = self._signed(key, signature)
        if authorization:
            raise UploadRefused(400, "InvalidArgument", "Only one auth mechanism allowed")
        if length is None:
            raise UploadRefused(411, "MissingContentLength", "Content-Length is required")
        if not length.isdigit() or int(length) != slot.size:
            raise UploadRefused(
                403, "SignatureDoesNotMatch", f"Content-Length {length} is not the signed size"
            )
        return slot

    def check_get(self, key: str, signature: str) -> Upload:
        """The uploaded object a presigned GET (an activeArtifact downloadUrl) may read."""
        slot = self._signed(key, signature)
        if not slot.received:
            raise UploadRefused(404, "NoSuchKey", "The specified key does not exist")
        return slot

    def _signed(self, key: str, signature: str) -> Upload:
        slot = self.uploads.get(key)
        if slot is None or not hmac.compare_digest(slot.signature.encode(), signature.encode()):
            raise UploadRefused(403, "SignatureDoesNotMatch", "The signature does not match")
        if time.time() > slot.expires:
            raise UploadRefused(403, "AccessDenied", "Request has expired")
        return slot

    def finalize(self, app_id: str, key: str) -> FlashBuild:
        """finalizeFlashArtifactUpload: the uploaded tarball becomes a build."""
        self.app(app_id)
        slot = self.uploads.get(key)
        if slot is None or slot.flashAppId != app_id:
            raise ApiError(f"Unknown objectKey for this app: {key}")
        if not slot.received:
            raise ApiError(f"Artifact not uploaded: {key}")
        build = FlashBuild(
            id=new_id(20),
            flashAppId=app_id,
            objectKey=key,
            createdAt=now(),
            manifest=_read_manifest(slot.path),
            path=slot.path,
        )
        self.builds[build.id] = build
        return build

    def build(self, build_id: str) -> FlashBuild:
        """The build of that id, or an error."""
        build = self.builds.get(build_id)
        if build is None:
            raise ApiError(f"Flash build not found: {build_id}")
        return build

    def deploy(self, env_id: str, build_id: str) -> FlashEnvironment:
        """deployBuildToEnvironment: the build becomes the environment's active one."""
        env = self.environment(env_id)
        build = self.build(build_id)
        if build.flashAppId != env.flashAppId:
            raise ApiError("The build belongs to another app than the environment")
        env.activeBuildId = build.id
        env.state = "HEALTHY"
        return env

    def set_manifest(self, build_id: str, manifest: object) -> FlashBuild:
        """updateFlashBuildManifest."""
        build = self.build(build_id)
        if not isinstance(manifest, dict):
            raise ApiError("manifest must be a JSON object")
        build.manifest = manifest
        return build

    def active_manifest(self, env_id: str) -> dict[str, Any] | None:
        """The (mutable, persisted) manifest of the environment's active build, or None."""
        env = self.environments.get(env_id)
        if env is None or env.activeBuildId is None:
            return None
        return self.builds[env.activeBuildId].manifest

    def artifact_of(self, env_id: str | None) -> Path | None:
        """The tarball of the environment's active build (None: none deployed)."""
        env = self.environments.get(env_id or "")
        if env is None or env.activeBuildId is None:
            return None
        return self.builds[env.activeBuildId].path


def expires_iso(stamp: float) -> str:
    """An expiry time as the API writes it."""
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat().replace("+00:00", "Z")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = sorted(
                (m for m in tar.getmembers() if Path(m.name).name == "flash_manifest.json"),
                key=lambda m: m.name.count("/"),
            )
            if not names:
                raise ApiError("Invalid artifact: no flash_manifest.json in the tarball")
            handle = tar.extractfile(names[0])
            if handle is None:
                raise ApiError("Invalid artifact: flash_manifest.json is not a file")
            manifest = json.loads(handle.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ApiError(f"Invalid artifact: not a gzip tarball ({exc})") from exc
    except ValueError as exc:
        raise ApiError(f"Invalid artifact: flash_manifest.json is not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ApiError("Invalid artifact: flash_manifest.json is not a JSON object")
    return manifest
