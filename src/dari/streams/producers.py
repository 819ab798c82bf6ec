"""Producer ids for idempotent producers (InitProducerId).

Ids are handed out from blocks reserved on disk before use, so a restart never reuses an id a
producer may still hold: the file records the first id of the next unreserved block.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK_SIZE = 1000
MAX_EPOCH = 32767


class ProducerIdManager:
    """Allocates producer ids; owned by the event loop thread."""

    def __init__(self, meta_dir: Path) -> None:
        self._path = meta_dir / "producer_id_block"
        meta_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._next = int(self._path.read_text().strip() or 0)
        except FileNotFoundError:
            self._next = 0
        self._limit = self._next  # nothing reserved in this process yet

    def allocate(self) -> int:
        if self._next >= self._limit:
            self._reserve(self._next + BLOCK_SIZE)
        producer_id = self._next
        self._next += 1
        return producer_id

    def bump(self, producer_id: int, epoch: int) -> tuple[int, int]:
        """A known producer re-initialising: same id with the next epoch, or a new id when the
        epoch would overflow (as Kafka does)."""
        if 0 <= producer_id < self._next and 0 <= epoch < MAX_EPOCH - 1:
            return producer_id, epoch + 1
        return self.allocate(), 0

    def _reserve(self, limit: int) -> None:
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(str(limit))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)
        self._limit = limit
