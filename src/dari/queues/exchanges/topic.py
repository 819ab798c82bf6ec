"""Topic exchange: binding keys are dot-separated patterns, ``*`` = one word, ``#`` = zero or more.

The bindings of one exchange form a trie over words (as RabbitMQ's topic trie does), so routing
costs grow with the length of the routing key and the number of wildcard branches it meets, not
with the number of bindings. Words are split on every ``.``: ``""`` has no words, ``"."`` has two
empty ones, ``"a..b"`` has an empty middle word; ``*`` and ``#`` are wildcards only as whole words.

``#`` may appear anywhere and any number of times. Several ``#`` could reach one trie node by
exponentially many paths, so each (``#`` node, position) state is visited once per message.
"""

from __future__ import annotations

from collections.abc import Iterable

from dari.queues.bindings import Binding, Destination
from dari.queues.exchanges.base import ExchangeType, Headers, RefCounts, register_exchange_type

STAR = "*"
HASH = "#"


def split_words(key: str) -> list[str]:
    """Words of a routing or binding key; the empty key has none."""
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "refs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.refs: RefCounts | None = None

    def is_empty(self) -> bool:
        return not self.children and not self.refs


@register_exchange_type
class TopicExchange(ExchangeType):
    name = "topic"
    description = "AMQP topic exchange, as per the AMQP specification"

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root = _Node()

    def add_binding(self, binding: Binding) -> None:
        node = self._root
        for word in split_words(binding.routing_key):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _Node()
            node = child
        if node.refs is None:
            node.refs = RefCounts()
        node.refs.add(binding.destination)

    def remove_binding(self, binding: Binding) -> None:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in split_words(binding.routing_key):
            child = node.children.get(word)
            if child is None:
                return
            path.append((node, word))
            node = child
        if node.refs is None:
            return
        node.refs.remove(binding.destination)
        if not node.refs:
            node.refs = None
        # Prune the branch bottom-up so a trie never keeps nodes for removed bindings.
        for parent, word in reversed(path):
            if not parent.children[word].is_empty():
                break
            del parent.children[word]

    def route(self, routing_key: str, headers: Headers) -> Iterable[Destination]:
        words = split_words(routing_key)
        out: dict[Destination, int] = {}
        _match(self._root, words, 0, len(words), out, set())
        return out.keys()

    def node_count(self) -> int:
        """Nodes in the trie, root included (a trie without bindings has one)."""
        count, stack = 0, [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
        return count


def _match(
    node: _Node,
    words: list[str],
    i: int,
    n: int,
    out: dict[Destination, int],
    seen: set[tuple[int, int]],
) -> None:
    """Collect into ``out`` the destinations under ``node`` that match ``words[i:]``."""
    children = node.children
    if children:
        hash_node = children.get(HASH)
        if hash_node is not None:
            # '#' absorbs words[i:j] for every j; each (node, j) state is expanded once.
            hid = id(hash_node)
            for j in range(i, n + 1):
                state = (hid, j)
                if state not in seen:
                    seen.add(state)
                    _match(hash_node, words, j, n, out, seen)
        if i < n:
            word = words[i]
            if word != STAR and word != HASH:
                child = children.get(word)
                if child is not None:
                    _match(child, words, i + 1, n, out, seen)
            child = children.get(STAR)
            if child is not None:
                _match(child, words, i + 1, n, out, seen)
            return
    if i == n and node.refs is not None:
        out.update(node.refs.counts)
