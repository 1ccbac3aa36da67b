"""The stamped log line: every line a worker writes carries the wall-clock time it was written.

    2026-12-01T17:00:12.345678Z out GET /compute 200 3.1ms
    2026-12-01T17:00:12.350001Z err Traceback (most recent call last):
    2026-12-01T17:00:13.000000Z flash starting worker on port 40123

`<UTC time, microseconds>Z <stream> <text>`, where the stream is `out` (stdout), `err` (stderr)
or `flash` (a line of the local cloud service itself). The worker stamps the lines of its
`sys.stdout`/`sys.stderr` (user `print()`, logging, tracebacks) as they are written, so readers
order lines of several endpoints by when they happened, not by when they were read. Bytes
written to the file descriptors directly (C extensions, child processes) arrive unstamped;
`parse_line` returns `at=None` for them, as for log files written before the stamp existed.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

__all__ = ["STAMP_ENV", "STREAMS", "StampedWriter", "format_line", "install", "parse_line", "stamp"]

STREAMS = ("out", "err", "flash")
# Set to "1" by whoever turns a worker's output into a log (the local cloud's supervisor).
STAMP_ENV = "FLASH_LOG_STAMP"
# A partial line longer than this is written out unfinished: memory stays bounded and a
# program printing a huge line without a newline still shows it.
_MAX_PENDING = 64 * 1024
_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6})Z (out|err|flash) ")


def stamp(at: float) -> str:
    """`at` (epoch seconds) as the line prefix's time: `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    seconds = int(at)
    micros = int(round((at - seconds) * 1_000_000))
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def format_line(text: str, stream: str, at: float | None = None) -> str:
    """One stamped line (with its newline) of `text` written on `stream` at `at` (default now)."""
    return f"{stamp(time.time() if at is None else at)} {stream} {text}\n"


def parse_line(raw: str) -> tuple[float | None, str | None, str]:
    """`(at, stream, text)` of a log line; `(None, None, raw)` for an unstamped line."""
    match = _LINE.match(raw)
    if match is None:
        return None, None, raw
    when = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc)
    return when.timestamp(), match.group(2), raw[match.end() :]


class StampedWriter(io.TextIOBase):
    """A text stream that writes stamped lines straight to a file descriptor.

    Complete lines are written at once, one `write(2)` per call, so lines of stdout, stderr
    and of several threads never interleave inside a line. A partial line waits for its
    newline (print() writes the text and the newline separately), or for `flush()`, after
    which its rest continues the same line unstamped.
    """

    def __init__(self, fd: int, stream: str, lock: threading.RLock) -> None:
        super().__init__()
        self._fd = fd
        self._stream = stream
        # Shared by stdout and stderr: they write to the same log file. Reentrant: a signal
        # handler that prints must not deadlock on a write it interrupted.
        self._lock = lock
        self._pending = ""
        self._at_line_start = True
        self._binary = _BinaryView(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    @property
    def line_buffering(self) -> bool:
        return True

    @property
    def buffer(self) -> io.RawIOBase:  # type: ignore[override]
        """Bytes written here (`sys.stdout.buffer.write`) are decoded and stamped too."""
        return self._binary

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        """Buffer `text`; write every line it completes, stamped with the time now."""
        with self._lock:
            data = self._pending + text
            cut = data.rfind("\n")
            out = ""
            if cut >= 0:
                out = self._stamped(data[:cut], time.time())
                data = data[cut + 1 :]
            if len(data) > _MAX_PENDING:
                out += self._partial(data)
                data = ""
            self._pending = data
            self._emit(out)
        return len(text)

    def write_line(self, text: str) -> None:
        """Write one whole line of the worker's own (a request line), even while a partial
        line of the program is pending."""
        with self._lock:
            # A flushed partial line is in the file: end it rather than append to it.
            self._emit(("" if self._at_line_start else "\n") + format_line(text, self._stream))
            self._at_line_start = True

    def flush(self) -> None:
        """Write a pending partial line now (its rest will continue it unstamped)."""
        with self._lock:
            if self._pending:
                self._emit(self._partial(self._pending))
                self._pending = ""

    def _stamped(self, block: str, at: float) -> str:
        prefix = f"{stamp(at)} {self._stream} "
        lines = block.split("\n")
        first = lines[0] if not self._at_line_start else prefix + lines[0]
        self._at_line_start = True
        return "".join([first + "\n", *(prefix + line + "\n" for line in lines[1:])])

    def _partial(self, text: str) -> str:
        if self._at_line_start:
            text = f"{stamp(time.time())} {self._stream} {text}"
        self._at_line_start = False
        return text

    def _emit(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(self._fd, data)
            except InterruptedError:
                continue
            except OSError:
                return  # a closed log file must not fail the program that prints
            data = data[written:]


class _BinaryView(io.RawIOBase):
    """`sys.stdout.buffer` of a `StampedWriter`: decodes UTF-8 (incrementally) and writes text."""

    def __init__(self, text: StampedWriter) -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._text.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


def install() -> None:
    """Stamp this process's stdout and stderr lines (call once, early, in the worker process)."""
    sys.stdout.flush()
    sys.stderr.flush()
    lock = threading.RLock()
    sys.stdout = StampedWriter(sys.stdout.fileno(), "out", lock)
    sys.stderr = StampedWriter(sys.stderr.fileno(), "err", lock)
