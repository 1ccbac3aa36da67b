"""Per-endpoint log files: a worker's output goes through a pipe to its log writer process
(`logwriter.py`), which writes the file and holds its size cap by rotating it.

The writer is a process of its own, not a thread of the service: a worker must keep running,
and keep logging, while the service is down or restarting (it is re-adopted later), and the
cap must hold even when a worker writes at disk speed (the pipe holds it back while the writer
rotates). The service only appends its own marker lines (O_APPEND) and reads the files.

Lines are stamped by the worker with the time they were written (`runtime.logline`: `<UTC
time>Z <stream> <text>`); the service's own lines use the stream `flash`.

Files: `<name>.log` (current), `<name>.log.1` ... `<name>.log.<keep>` (older). Their total stays
within `(keep + 1) * max_bytes`, plus the service's marker lines (a few hundred bytes each).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from engine.localcloud.texts import bound_text
from runtime.logline import format_line, parse_line

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_MAX_BYTES",
    "MAX_LINE_BYTES",
    "append_marker",
    "log_path",
    "open_for_worker",
    "plain_lines",
    "read_new",
    "redact_files",
    "remove_logs",
    "rotate_if_needed",
    "redact",
    "spawn_detached",
    "start_writer",
    "tail_for_follow",
    "tail_lines",
]

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_KEEP = 2
# Lines leave the files cut to this size (head and tail kept): a 30 MB line printed by a
# program must not become a 30 MB answer or screen.
MAX_LINE_BYTES = 16 * 1024
_TAIL_CHUNK = 64 * 1024


def log_path(logs_dir: Path, endpoint: str) -> Path:
    """The current log file of `endpoint`."""
    return logs_dir / f"{endpoint}.log"


def open_for_worker(path: Path) -> int:
    """An O_APPEND descriptor (0600) for a worker's stdout/stderr; the caller closes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def spawn_detached(
    command: Sequence[str], output: int, *, cwd: str, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Start `command` in a session of its own, stdout/stderr to `output` (closed here)."""
    try:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            cwd=cwd,
            env=dict(env),
            # Its own session: it outlives its starter (the CLI/TUI, the service) and their
            # terminal, and a signal to the starter's process group does not reach it.
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(output)


def start_writer(
    path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the log writer of `path`; returns it and the pipe's write end for the worker's
    stdout/stderr (the caller closes that descriptor once the worker has it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    try:
        writer = subprocess.Popen(
            [
                sys.executable,
                "-I",  # isolated: the writer imports nothing but the standard library
                str(Path(__file__).with_name("logwriter.py")),
                "--path",
                str(path),
                "--max-bytes",
                str(max_bytes),
                "--keep",
                str(keep),
            ],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: it outlives the service, and signals meant for the service's
            # group or the worker's group do not cut the log short.
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return writer, write_end


def append_marker(path: Path, message: str) -> None:
    """Append a service line (stream `flash`, see `runtime.logline`) so the log tells the whole
    story."""
    fd = open_for_worker(path)
    try:
        os.write(fd, format_line(message, "flash").encode())
    finally:
        os.close(fd)


def rotate_if_needed(
    path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP
) -> bool:
    """Rotate `path` when it exceeds `max_bytes` (copy, then truncate); True if it did.

    For files no log writer is attached to; a running worker's writer rotates its own file.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    for index in range(keep, 1, -1):
        older = path.with_name(f"{path.name}.{index - 1}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index}"))
    first = path.with_name(f"{path.name}.1")
    if keep >= 1:
        shutil.copyfile(path, first)
        os.chmod(first, 0o600)
    with open(path, "r+b") as handle:
        handle.truncate(0)
    return True


def _read_tail(path: Path, count: int) -> tuple[bytes, int]:
    """The end of the file holding at least its last `count` lines, and the file size read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= count:
                step = min(_TAIL_CHUNK, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return b"", 0
    return data, end


def _last_lines(data: bytes, count: int) -> list[str]:
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [bound_text(line, MAX_LINE_BYTES) for line in lines[-count:]] if count else []


def _tail_of_file(path: Path, count: int) -> list[str]:
    return _last_lines(_read_tail(path, count)[0], count)


def redact(lines: list[str], secrets: list[str]) -> list[str]:
    """`lines` with every occurrence of a secret (an endpoint key a user program printed)
    replaced by `***`; whatever leaves the log files for a screen or a record goes through here."""
    secrets = [secret for secret in secrets if secret]
    if not secrets:
        return lines
    out = []
    for line in lines:
        for secret in secrets:
            line = line.replace(secret, "***")
        out.append(line)
    return out


def plain_lines(lines: list[str]) -> list[str]:
    """`lines` without their stamps, for text that is read as a whole (a crash record's tail);
    the service's own lines keep a `[flash]` tag."""
    out = []
    for line in lines:
        _, stream, text = parse_line(line)
        out.append(f"[flash] {text}" if stream == "flash" else text)
    return out


def tail_lines(path: Path, count: int = 200) -> list[str]:
    """The last `count` lines, reaching into the newest rotated file when the current is short."""
    lines = _tail_of_file(path, count)
    if len(lines) < count:
        older = _tail_of_file(path.with_name(f"{path.name}.1"), count - len(lines))
        lines = older + lines
    return lines


def last_lines(path: Path, count: int, keys: Iterable[str]) -> list[str]:
    """The last lines of a log as text, keys redacted: for records and events."""
    return redact(plain_lines(tail_lines(path, count)), list(keys))


def tail_for_follow(path: Path, count: int) -> tuple[list[str], int]:
    """`tail_lines` and the offset `read_new` continues from: read at once, so no line is lost
    or given twice between the history and what follows."""
    data, end = _read_tail(path, count)
    # A trailing partial line is left for `read_new`, which sends it once complete.
    cut = data.rfind(b"\n") + 1
    lines, offset = _last_lines(data[:cut], count), end - (len(data) - cut)
    if len(lines) < count:
        older = _tail_of_file(path.with_name(f"{path.name}.1"), count - len(lines))
        lines = older + lines
    return lines, offset


def read_new(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines written after byte `offset`, and the offset to continue from.

    A file shorter than `offset` was rotated (truncated): reading restarts at 0. A trailing
    partial line is left for the next call.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < offset:
                offset = 0
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], 0
    cut = data.rfind(b"\n")
    if cut < 0:
        return [], offset
    chunk = data[: cut + 1]
    lines = chunk.decode("utf-8", errors="replace").splitlines()
    return [bound_text(line, MAX_LINE_BYTES) for line in lines], offset + len(chunk)


def remove_logs(path: Path) -> None:
    """Delete the current and rotated log files of one endpoint."""
    for candidate in [path, *path.parent.glob(f"{path.name}.*")]:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def redact_files(path: Path, secrets: list[str]) -> None:
    """Redact `secrets` in the current and rotated log files of one endpoint, in place."""
    secrets = [secret for secret in secrets if secret]
    if not secrets:
        return
    for candidate in [path, *path.parent.glob(f"{path.name}.*")]:
        try:
            text = candidate.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        redacted = text
        for secret in secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != text:
            # A new file swapped in whole: a crash mid-write never leaves half a log.
            temporary = candidate.with_name(candidate.name + ".redacting")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(redacted)
            os.replace(temporary, candidate)
