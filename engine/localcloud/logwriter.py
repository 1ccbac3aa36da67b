"""The log writer of one worker: copies the worker's output (a pipe on stdin) into its log file,
holding the size cap by rotating before a write would cross it.

One small process per worker, started by the supervisor in a session of its own and run as a
script (`python -I logwriter.py ...`, standard library only, so it starts fast and imports
nothing of the service). Why a process between the worker and its file:

- The cap holds whatever the worker does: the writer rotates before the file would pass
  `max_bytes`, and a worker writing faster than the writer is held back by the full pipe
  instead of growing the file. (The service used to check sizes every second: a worker
  writing at disk speed put hundreds of MB in between.)
- Rotation is a rename, done here: no copy, no lost line, nothing on the control plane's
  event loop.
- It outlives the service like the worker does (re-adoption needs no log plumbing), and it
  reads the pipe to its end: the last lines of a crashed or SIGKILLed worker are kept. It
  ignores SIGTERM/SIGINT/SIGHUP for that reason and exits when every writer has closed the pipe.

Each file stays within `max_bytes`, plus the service's own marker lines appended beside it;
the endpoint's logs stay within `(keep + 1) * max_bytes` plus that slack.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
from pathlib import Path

_CHUNK = 64 * 1024
# A bigger pipe means fewer wake-ups under a flood (best effort: capped by the system).
_PIPE_SIZE = 1024 * 1024


def rotate(path: Path, keep: int) -> None:
    """Shift `path.1..keep-1` up one, then move `path` to `path.1` (or drop it when keep is 0)."""
    if keep < 1:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    for index in range(keep, 1, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(
                path.with_name(f"{path.name}.{index - 1}"), path.with_name(f"{path.name}.{index}")
            )
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path.with_name(f"{path.name}.1"))


def _open(path: Path) -> int | None:
    """The log file opened for appending, or None when it cannot be (a full disk)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return None


def copy_capped(source: int, path: Path, max_bytes: int, keep: int) -> None:
    """Copy `source` to `path` until end of file, rotating so no file passes `max_bytes`.

    The pipe is always drained: when the disk is full the output is dropped (and the file
    opened again later), rather than the worker blocked on a full pipe.
    """
    chunk_size = max(1, min(_CHUNK, max_bytes))
    fd = _open(path)
    try:
        while True:
            try:
                data = os.read(source, chunk_size)
            except InterruptedError:
                continue
            if not data:
                return
            if fd is None:
                fd = _open(path)
                if fd is None:
                    continue
            # fstat, not a counter: the service appends marker lines to the same file.
            size = os.fstat(fd).st_size
            if size > 0 and size + len(data) > max_bytes:
                # The complete lines that still fit end this file: lines stay whole.
                cut = data.rfind(b"\n", 0, max(0, max_bytes - size))
                if cut >= 0:
                    with contextlib.suppress(OSError):
                        os.write(fd, data[: cut + 1])
                    data = data[cut + 1 :]
                os.close(fd)
                with contextlib.suppress(OSError):
                    rotate(path, keep)
                fd = _open(path)
                if fd is None:
                    continue
            if data:
                with contextlib.suppress(OSError):
                    os.write(fd, data)
    finally:
        if fd is not None:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """Copy stdin to the capped log file until every writer has gone."""
    parser = argparse.ArgumentParser(prog="logwriter")
    parser.add_argument("--path", required=True)
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--keep", type=int, required=True)
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    path = Path(args.path)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > args.max_bytes:
            rotate(path, args.keep)
    copy_capped(0, path, max(1, args.max_bytes), args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
