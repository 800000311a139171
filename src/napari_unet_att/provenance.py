"""Where a file came from: the time stamp written into checkpoints, model packages and TIFF metadata."""

from __future__ import annotations

import datetime as _dt


def timestamp() -> str:
    """Now, in UTC, as ISO 8601 to the second (``2026-12-02T21:34:03+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
