"""The layering of ARCHITECTURE.md, checked from the source tree.

Imports point one way: server -> protocol, queues, streams -> storage -> records. The domain
(queues, streams) knows no wire format and no sockets; storage knows only records; the codecs
under protocol are sans-IO and know no domain; records is the bottom layer. And no module imports
another that (directly or through others) imports it back.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "dari"

# layer -> the dari layers it may import (besides itself and the top-level dari modules that
# the rule names explicitly)
ALLOWED: dict[str, set[str]] = {
    "records": set(),
    "storage": {"records"},
    "protocol": {"records"},
    "queues": {"records", "storage", "message", "clock", "config"},
    "streams": {"records", "storage", "message", "clock", "config"},
}
IO_MODULES = {"asyncio", "uvloop", "socket", "selectors"}


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = SRC) -> Iterator[str]:
    """Every module ``path`` imports, at any depth of the file (TYPE_CHECKING blocks too:
    a type-only import still couples the layers)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name
            for alias in node.names:
                yield f"{name}.{alias.name}"


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in source_files()}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            # `from dari.x import name` names a module only when it is one
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        edges[name] = targets
    return edges


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_import_only_what_they_may() -> None:
    broken = []
    for path in source_files():
        own = layer(module_name(path))
        if own not in ALLOWED:
            continue
        for imported in imports_of(path):
            root = imported.split(".")[0]
            if own == "protocol" and root in IO_MODULES:
                broken.append(f"{module_name(path)} imports {root}: protocol/ is sans-IO")
            target = layer(imported)
            if root == "dari" and target is not None and target not in (own, *ALLOWED[own]):
                broken.append(f"{module_name(path)} imports dari.{target}")
    assert sorted(set(broken)) == []


def test_no_import_circles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from dari.protocol import amqp\n", {"dari.protocol", "dari.protocol.amqp"}),
        ("from ..storage import log\n", {"dari.storage", "dari.storage.log"}),
        ("from . import errors\n", {"dari.queues", "dari.queues.errors"}),
        ("if TYPE_CHECKING:\n    import asyncio\n", {"asyncio"}),
    ],
)
def test_imports_are_read_from_source(tmp_path: Path, source: str, expected: set[str]) -> None:
    """The checker sees absolute, relative and type-only imports and the names they bring."""
    probe = tmp_path / "dari" / "queues" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(source)
    assert set(imports_of(probe, tmp_path)) == expected
