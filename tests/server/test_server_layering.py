"""The server's modules form no import circle (components get narrow
interfaces instead of reaching back into the node), and no server module
names a consensus protocol: cores come from `ringbolt.consensus.registry`."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "ringbolt" / "server"


def server_imports() -> dict[str, set[str]]:
    """module -> the other server modules it imports (type-only imports too)."""
    names = {path.stem for path in SERVER.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in SERVER.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("ringbolt.server."):
                    found.add(node.module.split(".")[2])
                elif node.module == "ringbolt.server":
                    found.update(alias.name for alias in node.names)
        graph[path.stem] = found & names
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dependency in sorted(graph[module]):
            if state.get(dependency) == 1:
                return path[path.index(dependency):] + [dependency]
            if dependency not in state:
                found = visit(dependency)
                if found:
                    return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_inside_server() -> None:
    assert cycle(server_imports()) is None


def test_no_server_module_names_a_consensus_protocol() -> None:
    for path in SERVER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module not in {"ringbolt.consensus.raft",
                                           "ringbolt.consensus.messages"}, (
                    f"{path.name} imports {node.module}: take the core's codec and "
                    "factory from ringbolt.consensus.registry instead")
