"""Training metrics as JSON Lines: one record per optimiser step and one per evaluation.

Each record is written with a single ``write`` and flushed, so a killed process can at worst
leave a partial last line, which readers skip. On resume, records past the resumed step (and any
partial line) are dropped by rewriting the file atomically, so the log of a resumed run is the
log an uninterrupted run would have written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from polyformer.files import atomic_write_text


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics file (an unfinished last line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the partial line of a process killed mid-write
        if isinstance(record, dict):
            records.append(record)
    return records


class MetricsLog:
    """Appends records to ``metrics.jsonl``; does nothing when ``enabled`` is False (other ranks)."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._handle = None

    def truncate_after(self, step: int) -> None:
        """Keep only complete records with ``step <= step`` (``step=0``: start empty)."""
        if not self.enabled:
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def sync(self) -> None:
        """Make what was written durable (called before a checkpoint is committed)."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
