"""The import graph of dsocr_cli, read from the source (ast: nothing is imported, torch included).

Data flows one way: requests.py at the bottom, then the model and the engine, then the pipelines,
writers and the CLI. The graph has no cycle, and nothing in engine/ or model/ imports upward.
Every import counts, those inside functions and under TYPE_CHECKING too: a circle a type hint
hides is still a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dsocr_cli"
# What the model and the engine may import: each other, and the modules below them.
BELOW_ENGINE = {"errors", "requests", "tokenizer", "generate", "preprocess", "prompts", "checkpoint"}
LOW_PACKAGES = ("model", "engine")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The dsocr_cli modules `path` imports (names below the package, e.g. 'engine.feeder')."""
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
            elif node.module and node.module.split(".")[0] == "dsocr_cli":
                base, node = [], ast.ImportFrom(module=node.module.partition(".")[2] or None, names=node.names)
            else:
                continue
            target = base + (node.module.split(".") if node.module else [])
            for alias in node.names:  # `from . import x` imports the module x when there is one
                candidate = ".".join(target + [alias.name])
                found.add(candidate if candidate in MODULES else ".".join(target))
        elif isinstance(node, ast.Import):
            found |= {a.name.partition(".")[2] for a in node.names if a.name.startswith("dsocr_cli.")}
    return {name for name in found if name in MODULES and name != module_name(path)}


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(path) for path in FILES}
GRAPH = {module_name(path): imports_of(path) for path in FILES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read():
    assert "requests" in GRAPH["engine.engine"]
    assert "engine.feeder" in GRAPH["engine.engine"]
    assert len(GRAPH) > 40


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_model_and_engine_import_nothing_above_them():
    upward = [f"{name} imports {target}" for name, targets in GRAPH.items()
              if name.split(".")[0] in LOW_PACKAGES
              for target in targets
              if target.split(".")[0] not in LOW_PACKAGES and target not in BELOW_ENGINE]
    assert not upward, "; ".join(upward)


def test_model_knows_nothing_of_the_engine():
    upward = [f"{name} imports {target}" for name, targets in GRAPH.items() if name.startswith("model")
              for target in targets if not (target.startswith("model") or target in ("errors", "requests"))]
    assert not upward, "; ".join(upward)


def test_the_seam_is_the_bottom():
    assert GRAPH["requests"] <= {"errors", "tokenizer", "preprocess"}, GRAPH["requests"]
