"""Exceptions raised by the worker runtime (mirrors upstream's `runtime.exceptions` names)."""

from __future__ import annotations

__all__ = [
    "TRACEBACK_HEADER",
    "EndpointNotFoundError",
    "FlashRuntimeError",
    "ManifestError",
    "RemoteExecutionError",
    "SerializationError",
]


# A caller that sends this header to a load-balanced route gets the remote traceback in a 500
# body (cross-endpoint calls and `flash-tui invoke` do); other clients get only the error line.
TRACEBACK_HEADER = "x-flash-traceback"


class FlashRuntimeError(Exception):
    """Base class of every runtime error."""


class SerializationError(FlashRuntimeError):
    """A value could not be pickled/encoded, or a payload could not be decoded/unpickled."""


class ManifestError(FlashRuntimeError):
    """The build manifest is missing, unreadable or malformed."""


class EndpointNotFoundError(FlashRuntimeError):
    """A cross-endpoint call names an endpoint the service registry does not know."""


class RemoteExecutionError(FlashRuntimeError):
    """A function executed on another endpoint failed there.

    `remote_traceback` is the far side's formatted traceback (may be empty), `status` the HTTP
    status when the failure was an HTTP error, `endpoint` the target resource name.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_traceback: str = "",
        endpoint: str | None = None,
        status: int | None = None,
    ) -> None:
        self.message = message
        self.remote_traceback = remote_traceback or ""
        self.endpoint = endpoint
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        where = f" on endpoint {self.endpoint!r}" if self.endpoint else ""
        text = f"remote execution failed{where}: {self.message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text
