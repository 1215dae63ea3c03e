"""The package's structure, checked from its own imports (every ``import`` statement, module level or not):

* the import graph of ``backend/edgeledger`` has no circle;
* no module but the CLI imports the app module (``edgeledger.main``): domains build what they need from
  settings (``ChainClient.from_settings``, ``IpfsClient.from_settings``, ``RateLimiter.from_settings``);
* the ledger core and the chain-only verifiers import no database, web or worker code, at any depth;
* no Python file is over 900 lines;
* the ABIs packaged in ``edgeledger/ledger/abi`` are what the contracts compile to.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from edgeledger.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "backend" / "edgeledger"
MAX_LINES = 900


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(base: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return base
    parts = current.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, base] if base else anchor)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a ``from package import submodule`` counts as importing
    the submodule, a ``from package import name`` as importing the package)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a non-module attribute path
                    target = target.rpartition(".")[0]
                if target.startswith("edgeledger") and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
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
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle() -> None:
    graph = import_graph()
    assert len(graph) > 100  # every module was read
    assert circles(graph) == []


def test_a_circle_is_found_when_there_is_one() -> None:
    # The checker itself: a small graph with one circle and one chain.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_only_the_cli_imports_the_app() -> None:
    importers = {name for name, targets in import_graph().items() if "edgeledger.main" in targets}
    assert importers <= {"edgeledger.cli"}, importers


def test_ledger_and_verifiers_load_no_database_web_or_worker_code() -> None:
    modules = sorted(
        name for name in _modules() if name.startswith(("edgeledger.ledger", "edgeledger.verify"))
    )
    forbidden = ["sqlalchemy", "fastapi", "starlette", "celery", "edgeledger.db", "edgeledger.main"]
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {forbidden!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_no_python_file_is_over_900_lines() -> None:
    roots = [PACKAGE, PROJECT_ROOT / "benchmarks", PROJECT_ROOT / "scripts", PROJECT_ROOT / "migrations"]
    long = {
        str(path.relative_to(PROJECT_ROOT)): count
        for root in roots
        for path in root.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_packaged_abis_are_what_the_contracts_compile_to() -> None:
    """`make compile` writes them (scripts/export_abis.py); a contract changed without them fails here."""
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "export_abis.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
