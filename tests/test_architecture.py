"""The shape of the code: no import circle, dependencies at module level, short modules.

The import graph is built from the sources with ``ast`` (imports under ``if TYPE_CHECKING:`` do
not run and are left out); a circle anywhere among arx's modules fails with its path.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"cli": "arx.cli", "core": "arx.core", "runner_repo": "arx.runner_repo",
            "train": "arx.train"}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, bool]]:
    """Every import statement with whether it runs when the module is imported."""
    out: list[tuple[ast.stmt, bool]] = []

    def walk(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append((node, top))
            elif isinstance(node, ast.If) and _type_checking(node):
                continue
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                walk(node.body, top and isinstance(node, ast.ClassDef))
            elif hasattr(node, "body"):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    walk(getattr(node, field, []) or [], top)
    walk(tree.body, True)
    return out


def _targets(node: ast.stmt, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return [n for n in names if n in known]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        for node, top in _imports(ast.parse(path.read_text())):
            if top:
                edges[mod].update(t for t in _targets(node, known) if t != mod)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path per circle found by a depth-first search."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_no_import_circle_among_arx_modules():
    edges = graph()
    assert edges["arx.core.loop.engine"], "the graph reads no import at all"
    assert cycles(edges) == []


#: arx's packages from the floor up: a module may import its own package and those below it,
#: never one above. Loop and levels share a floor: the engine calls the levels every K and M
#: iterations and the levels read the trace the loop writes (no module-level circle between
#: them, which the test above checks). ``base`` is core's own top-level modules (config,
#: errors, states, direction, textfit).
FLOORS = [
    {"base"}, {"codemods", "execution", "llm"}, {"repo"}, {"proposers"}, {"loop", "levels"},
    {"replay"}, {"app"}, {"analysis"}, {"cli", "runner_repo", "train"},
]


def package(module: str) -> str:
    parts = module.split(".")
    if parts[1] != "core":
        return parts[1]
    return parts[2] if len(parts) > 2 and (ROOT / "core" / parts[2]).is_dir() else "base"


def floor(module: str) -> int:
    name = package(module)
    return next(i for i, names in enumerate(FLOORS) if name in names)


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if floor(b) > floor(a))


def test_every_package_has_a_floor():
    named = set().union(*FLOORS)
    assert {package(m) for m in modules()} <= named


def test_the_floor_check_finds_an_upward_import():
    assert upward({"arx.core.repo.git": {"arx.core.app.runs"}}) == [
        "arx.core.repo.git -> arx.core.app.runs"]
    assert upward({"arx.core.app.runs": {"arx.core.repo.git", "arx.core.errors"}}) == []


def test_no_package_imports_one_above_it():
    assert upward(graph()) == []


def test_arx_modules_are_imported_at_module_level_unless_a_comment_says_why():
    """A function-local import hides a dependency; the few that keep an optional, heavy package
    (ray, matplotlib) off the import path say so on the line above."""
    known = modules()
    unexplained = []
    for path in known.values():
        lines = path.read_text().splitlines()
        for node, top in _imports(ast.parse("\n".join(lines))):
            if top or not _targets(node, known):
                continue
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if not above.startswith("#"):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unexplained == []


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


#: heavy packages an `arx` start does not need: each command that uses one imports it then
#: (the tests start `arx` in hundreds of subprocesses; optuna with numpy was 0.3 s of each)
LAZY = ("openai", "optuna", "numpy", "libcst.matchers", "torch", "ray")


def test_an_arx_start_imports_no_heavy_package_it_does_not_need():
    import subprocess
    import sys

    code = ("import sys, arx.cli.main; "
            f"print(','.join(m for m in {LAZY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()}"
