"""Shared fixtures: real `dari serve` processes on free ports, and the external tools they need."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker import Broker

BrokerFactory = Callable[..., Broker]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Path of an external tool; in CI a missing tool fails the run instead of hiding a gap."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package: {name})"
        if in_ci():
            pytest.fail(f"{message}; CI must provide it, see .ci/run", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def kcat() -> str:
    return require_tool("kcat")


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Factory for brokers with custom settings; every broker it made is stopped at teardown."""
    made: list[Broker] = []

    def factory(**kwargs: object) -> Broker:
        name = f"broker{len(made)}"
        broker = Broker(
            tmp_path / name / "data",
            log_dir=tmp_path / name / "logs",
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(broker)
        return broker.start()

    yield factory
    for broker in made:
        broker.close()


@pytest.fixture
def broker(make_broker: BrokerFactory) -> Broker:
    """A fresh broker with default settings, for tests that restart it or look at its files."""
    return make_broker()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker shared by a module's tests; they must use distinct topics (see `topic`)."""
    root = tmp_path_factory.mktemp("module-broker")
    broker = Broker(root / "data", log_dir=root / "logs").start()
    yield broker
    broker.close()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test (legal Kafka characters only)."""
    base = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-")[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"
