import pytest
from storage_helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
