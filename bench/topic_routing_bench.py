"""Topic exchange routing cost with 100,000 random bindings.

``python bench/topic_routing_bench.py [--bindings 100000] [--routes 10000] [--seed 1]``

Binding keys have 2-5 words drawn from a vocabulary (40 or 1,000 words); each word is ``*``
with probability p_star and ``#`` with probability p_hash. Routing keys have 2-6 words from the
same vocabulary. With 40 words, wildcard bindings overlap heavily and a message hits hundreds of
bindings, so the cost is dominated by the size of the answer; with 1,000 words the answer is
small and the time is the trie walk itself. The "head" scenarios keep the first word literal,
as namespaced keys (``orders.#``, ``eu.*.error``) usually do.

Every binding points to its own queue, so "matches" is the number of bindings a message hits.
Times are per routed message (perf_counter_ns): the bare trie (``TopicExchange.route``) and the
full vhost path (``VirtualHost.route``: lookup, trie, queue handles, de-duplication).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from dari.queues import Binding, Destination, QueueRef, VirtualHost

SCENARIOS = [
    # name, vocabulary size, p_star, p_hash, literal first word
    ("literal, V=40", 40, 0.0, 0.0, False),
    ("10%* 2%#, V=40", 40, 0.10, 0.02, False),
    ("20%* 5%#, V=40", 40, 0.20, 0.05, False),
    ("literal, V=1k", 1000, 0.0, 0.0, False),
    ("10%* 2%#, V=1k", 1000, 0.10, 0.02, False),
    ("head 20%* 5%#, 1k", 1000, 0.20, 0.05, True),
    ("head 20%* 5%#, 40", 40, 0.20, 0.05, True),
]


def random_binding_key(
    rng: random.Random, vocab: list[str], p_star: float, p_hash: float, head: bool
) -> str:
    words = [rng.choice(vocab)] if head else []
    for _ in range(rng.randint(2, 5) - len(words)):
        r = rng.random()
        words.append("*" if r < p_star else "#" if r < p_star + p_hash else rng.choice(vocab))
    return ".".join(words)


def random_routing_key(rng: random.Random, vocab: list[str]) -> str:
    return ".".join(rng.choice(vocab) for _ in range(rng.randint(2, 6)))


def run(
    n_bindings: int,
    n_routes: int,
    seed: int,
    vocab_size: int,
    p_star: float,
    p_hash: float,
    head: bool,
) -> dict:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    vhost = VirtualHost()
    vhost.declare_exchange("bench", "topic")
    t0 = time.perf_counter()
    for i in range(n_bindings):
        qname = f"q{i}"
        vhost.add_queue(QueueRef(qname))
        key = random_binding_key(rng, vocab, p_star, p_hash, head)
        vhost.add_binding(Binding("bench", Destination.queue(qname), key))
    bind_s = time.perf_counter() - t0
    keys = [random_routing_key(rng, vocab) for _ in range(n_routes)]
    trie = vhost.exchange("bench").router

    clock = time.perf_counter_ns
    trie_ns, matches = [], []
    for key in keys:
        t = clock()
        out = trie.route(key, None)
        trie_ns.append(clock() - t)
        matches.append(len(out))
    vhost_ns = []
    for key in keys:
        t = clock()
        vhost.route("bench", key)
        vhost_ns.append(clock() - t)
    return {
        "bind_us": bind_s * 1e6 / n_bindings,
        "nodes": trie.node_count(),
        "matches": statistics.fmean(matches),
        "trie_mean": statistics.fmean(trie_ns) / 1000,
        "trie_p50": statistics.median(trie_ns) / 1000,
        "trie_p99": statistics.quantiles(trie_ns, n=100)[98] / 1000,
        "vhost_mean": statistics.fmean(vhost_ns) / 1000,
        "vhost_p99": statistics.quantiles(vhost_ns, n=100)[98] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=100_000)
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"topic routing: {args.bindings:,} bindings, {args.routes:,} routing keys")
    header = (
        f"{'scenario':<18} {'bind µs':>8} {'nodes':>8} {'matches':>8} "
        f"{'trie mean':>10} {'p50':>7} {'p99':>7} {'vhost mean':>11} {'p99':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, vocab_size, p_star, p_hash, head in SCENARIOS:
        r = run(args.bindings, args.routes, args.seed, vocab_size, p_star, p_hash, head)
        print(
            f"{name:<18} {r['bind_us']:>8.2f} {r['nodes']:>8,} {r['matches']:>8.1f} "
            f"{r['trie_mean']:>8.2f}µs {r['trie_p50']:>5.1f}µs {r['trie_p99']:>5.1f}µs "
            f"{r['vhost_mean']:>9.2f}µs {r['vhost_p99']:>5.1f}µs"
        )


if __name__ == "__main__":
    main()
