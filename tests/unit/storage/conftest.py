import contextlib
from collections.abc import Iterator

import pytest
from storage_helpers import FakeClock

from dari.storage import PartitionLog


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def close_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every log a test opened (and the segments it buried) once the test is over: many
    tests leave logs open on purpose, as a crashed broker would, and their descriptors would
    otherwise pile up over the run."""
    opened: list[PartitionLog] = []
    init = PartitionLog.__init__

    def tracking_init(self: PartitionLog, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    monkeypatch.setattr(PartitionLog, "__init__", tracking_init)
    yield
    for log in opened:
        with contextlib.suppress(Exception):  # a test may have broken it on purpose
            log.close()
        log._graveyard.close_all()
