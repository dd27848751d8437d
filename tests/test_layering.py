"""No import circle among the project's modules, `TYPE_CHECKING` imports included: sinks
are handed what they use, so no sink imports its target (docs/architecture.md). And the
emulators stand apart from the targets: `target-sandbox serve` never imports singer-sdk."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("target_core", "target_datainsider", "target_datatile", "target_graphitenote",
            "target_usmart")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, wherever the import statement is."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, `level - 1` packages up
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_graph_sees_type_checking_imports() -> None:
    graph = import_graph()
    assert "target_core.sink" in graph["target_core.target"]
    assert "target_core.filesink" in graph["target_core.filetarget"]


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_a_circle_would_be_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_emulators_import_no_target_code() -> None:
    """Serving the sandbox loads no singer-sdk (0.3 s of start-up, and an emulator that
    borrowed the target's own code would agree with the target's mistakes)."""
    emulators = [f"target_{name}.sandbox" for name in ("graphitenote", "datainsider",
                                                       "datatile", "usmart")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in emulators)
            + "import target_core.sandbox.cli\n"
            + "print(sorted(m for m in sys.modules if m.startswith('singer_sdk')"
              " or m.endswith(('.sink', '.target'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
