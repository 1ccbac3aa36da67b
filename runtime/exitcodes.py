"""Exit statuses of a worker process that its supervisor acts on."""

from __future__ import annotations

__all__ = ["RECYCLE_EXIT_CODE"]

# A worker that recycles itself (stuck calls) exits with this: the supervisor restarts it at
# once without counting a crash. 75 is EX_TEMPFAIL.
RECYCLE_EXIT_CODE = 75
