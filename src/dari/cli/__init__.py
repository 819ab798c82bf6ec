"""The ``dari`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

from dari import __version__
from dari.config import ConfigError, Settings

log = logging.getLogger("dari")


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


@click.group()
@click.version_option(__version__, prog_name="dari")
def main() -> None:
    """dari: one broker for message queues (AMQP 0-9-1) and event streams (Kafka protocol)."""


@main.command()
@click.option("--data-dir", help="Directory for logs and metadata [default: ./dari-data].")
@click.option("--kafka", "kafka", metavar="HOST:PORT", help="Kafka listener [127.0.0.1:9092].")
@click.option("--amqp", "amqp", metavar="HOST:PORT", help="AMQP listener [127.0.0.1:5672].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file.")
@click.option("--log-level", help="debug, info, warning or error [info].")
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any setting, e.g. num.partitions=3."
)
def serve(
    data_dir: str | None,
    kafka: str | None,
    amqp: str | None,
    config_file: str | None,
    log_level: str | None,
    sets: tuple[str, ...],
) -> None:
    """Run the broker until SIGTERM or SIGINT."""
    overrides: dict[str, object] = dict(_parse_sets(sets))
    overrides.update({"data.dir": data_dir, "kafka": kafka, "amqp": amqp, "log.level": log_level})
    try:
        settings = Settings.load(config_file, overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=str(settings["log.level"]).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The schema library registers property-testing strategies whenever hypothesis is
    # importable (as in a test environment); the broker never uses them and the import
    # costs a third of start-up.
    sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        runner = asyncio.run
    else:
        runner = uvloop.run
    sys.exit(runner(_serve(settings)))


async def _serve(settings: Settings) -> int:
    from dari.server.app import Broker
    from dari.storage import DataDirLockedError

    broker = Broker(settings)
    try:
        await broker.start()
    except DataDirLockedError as exc:
        log.error("%s", exc)
        print(f"dari: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        log.error("cannot start: %s", exc)
        print(f"dari: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(broker.ready_line, flush=True)
    log.info("%s (pid %d, data dir %s)", broker.ready_line, os.getpid(), settings.data_dir)
    await stop.wait()
    log.info("shutting down")
    await broker.stop()
    return 0
