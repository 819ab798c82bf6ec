"""The request header every Kafka request starts with, in a module of its own so the errors
(which carry it) and the codec (which reads it) need not import each other."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RequestHeader"]


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
