"""The architecture, checked: imports point down the layers, and no module imports itself
round a cycle. Type-only imports (under ``TYPE_CHECKING``) and imports inside functions
count: they are still a dependency a reader has to follow.

The layers, top to bottom (README, "Layout"):

    syndicate.cli                     operator commands
    syndicate.web                     HTTP: app, routes, auth, problem+json
    syndicate.delivery                fan-out, dispatcher, sender, webhooks, WebSub
    syndicate.content                 text, models, articles, feed rendering, ingest
    feeds, storage                    feed formats; the database
    syndicate.core                    settings, errors, shared names
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("syndicate", "feeds", "storage")

#: Layer of a module: the first prefix that matches, highest layer first.
LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (5, ("syndicate.cli", "syndicate.__main__")),
    (4, ("syndicate.web",)),
    (3, ("syndicate.delivery",)),
    (2, ("syndicate.content",)),
    (1, ("feeds", "storage")),
    (0, ("syndicate.core", "syndicate")),
]

#: Third-party packages a layer must not use: the delivery layer is no HTTP server,
#: the content layer does no networking at all.
FORBIDDEN = {
    "syndicate.delivery": ("aiohttp.web",),
    "syndicate.content": ("aiohttp",),
    "feeds": ("aiohttp",),
    "storage": ("aiohttp",),
    "syndicate.core": ("aiohttp",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``name`` imports (absolute names), with the line it does so on."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module
                submodule = f"{target}.{alias.name}"
                yield (submodule if submodule in MODULES else target), node.lineno


def _ours(target: str) -> str | None:
    """The module of ours ``target`` names (itself, or the package it is in)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _layer(module: str) -> int:
    for level, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(name, path):
            ours = _ours(target)
            if ours and ours != name:
                graph[name].add(ours)
    return graph


def test_every_module_is_in_a_layer() -> None:
    for name in MODULES:
        _layer(name)


def test_imports_point_down() -> None:
    upward = []
    for name, path in MODULES.items():
        for target, line in _imports(name, path):
            ours = _ours(target)
            if ours and _layer(ours) > _layer(name):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {ours}")
    upward = sorted(set(upward))
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("prefix", sorted(FORBIDDEN))
def test_layer_keeps_out_of(prefix: str) -> None:
    found = []
    for name, path in MODULES.items():
        if name != prefix and not name.startswith(prefix + "."):
            continue
        for target, line in _imports(name, path):
            for banned in FORBIDDEN[prefix]:
                if target == banned or target.startswith(banned + "."):
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not found, "\n".join(found)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    """The checks above can fail: a made-up graph with a type-only cycle is caught."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _layer("syndicate.web.app") > _layer("syndicate.delivery.service")


def test_no_module_over_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in MODULES.values()
        if (lines := path.read_text().count("\n")) > 500
    }
    assert long == {}
