"""The headers of a published message, decoded only if routing asks for them.

Most publishes go to direct, fanout or topic exchanges, which never look at headers: decoding
the field table of every message that carries one would be wasted work on the publish path.
"""

from __future__ import annotations

from typing import Any

from dari.protocol.amqp import ContentHeader


class LazyHeaders(dict):  # type: ignore[type-arg]
    """A dict of a content header's ``headers`` table, filled on first read; owned by one
    publish (event loop thread)."""

    __slots__ = ("_header", "_loaded")

    def __init__(self, header: ContentHeader) -> None:
        super().__init__()
        self._header = header
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            headers = self._header.headers
            if headers:
                super().update(headers)

    def __getitem__(self, key: Any) -> Any:
        self._load()
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self) -> Any:
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def items(self) -> Any:
        self._load()
        return super().items()

    def keys(self) -> Any:
        self._load()
        return super().keys()
