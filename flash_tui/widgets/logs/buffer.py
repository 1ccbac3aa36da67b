"""A bounded, append-only log buffer shared by the log pane and the logs screen."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

DEFAULT_CAPACITY = 20_000


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One displayed log line: a sequence number, `HH:MM:SS`, its source and the text;
    `probe` marks a health-probe request line (the engine's verdict)."""

    seq: int
    time: str
    source: str
    text: str
    level: str = "info"
    probe: bool = False


class LogBuffer:
    """Keeps the newest `capacity` records; readers catch up by sequence number.

    Memory stays bounded however fast endpoints log, and a reader that was away (the logs
    screen was closed) asks only for what is newer than the last record it saw.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._records: deque[LogRecord] = deque(maxlen=capacity)
        self._next_seq = 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(self._records)

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest record (-1 when empty)."""
        return self._next_seq - 1

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest record still kept."""
        return self._records[0].seq if self._records else self._next_seq

    def append(
        self, time: str, source: str, text: str, level: str = "info", probe: bool = False
    ) -> LogRecord:
        """Add one line (multi-line text is split so every row is one record)."""
        record: LogRecord | None = None
        for line in text.splitlines() or [""]:
            record = LogRecord(self._next_seq, time, source, line, level, probe)
            self._next_seq += 1
            self._records.append(record)
        assert record is not None
        return record

    def extend(self, items: Iterable[tuple[str, str, str]]) -> None:
        """Add many `(time, source, text)` lines at once."""
        for time, source, text in items:
            self.append(time, source, text)

    def since(self, seq: int) -> list[LogRecord]:
        """Records with a sequence number greater than `seq` still in the buffer."""
        if not self._records or seq >= self.last_seq:
            return []
        start = max(0, seq + 1 - self.first_seq)
        if start == 0:
            return list(self._records)
        # Walk from the newest end: a follower usually needs only a short tail.
        count = len(self._records) - start
        tail = list(islice(reversed(self._records), count))
        tail.reverse()
        return tail

    def sources(self) -> list[str]:
        """Distinct sources present, in first-seen order."""
        return list(dict.fromkeys(record.source for record in self._records))
