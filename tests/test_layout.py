"""The package's layers import only downward, with no circles, and nothing imports the root or ``cli``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mrseg"

LAYERS = {
    "errors": 0, "_version": 0, "classes": 0,
    "io": 1, "model": 1,
    "inference": 2, "report": 2, "postprocess": 2,
    "pipeline": 3,
    "demo": 4, "training": 4, "evaluation": 4, "phantom": 4, "cohort": 4, "annotation": 4,
    "review": 5,
    "cli": 6, "__main__": 6,
}
"""Top-level part of the package → layer (README, Layout)."""


def imports_of(path: Path) -> set[str]:
    """The mrseg modules a file imports (at any place in it), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mrseg":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "mrseg")
    return found


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def modules() -> dict[str, Path]:
    result = {}
    for path in PACKAGE.rglob("*.py"):
        dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        result[dotted.removesuffix(".__init__")] = path
    return result


def test_every_part_of_the_package_has_a_layer():
    assert {part(m) for m in modules() if m != "mrseg"} <= set(LAYERS)


def test_imports_go_only_downward_and_never_to_the_root_or_the_cli():
    upward = []
    for module, path in modules().items():
        if module == "mrseg":
            continue
        for imported in imports_of(path):
            if imported == "mrseg":
                upward.append(f"{module} imports the package root")
            elif part(imported) == "cli" and part(module) not in ("cli", "__main__"):
                upward.append(f"{module} imports {imported}")
            elif LAYERS[part(imported)] > LAYERS[part(module)]:
                upward.append(f"{module} (layer {LAYERS[part(module)]}) imports {imported}")
    assert upward == []


def test_no_import_circles_between_modules():
    graph = {m: {i for i in imports_of(p) if i in modules() and i != m} for m, p in modules().items()}
    graph = {m: {i for i in targets if not m.startswith(i + ".") and not i.startswith(m + ".")}
             for m, targets in graph.items()}  # a package and its own modules are one unit
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else nxt)
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []
