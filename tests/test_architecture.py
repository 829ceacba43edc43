"""The shape of the code: no import circle among the project's modules (counting every import in a file,
including those inside functions), data flowing one way between the top-level packages, and small modules."""

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("datamix_cli", "partitioners", "exporters")
MAX_LINES = 400  # the design's "a few hundred lines" (issue 17 aims at about 350)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict) -> set[str]:
    """Project modules imported anywhere in ``path``: ``from a.b import c`` is a.b.c if that is a module, else a.b."""
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                edges.add(target if target in known else node.module)
    return {e for e in edges if e in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_counting_every_import():
    assert cycles(graph()) == []


def test_partitioners_and_exporters_do_not_import_the_toolkit_beyond_its_errors():
    """Data flows one way: the toolkit composes partitioners and exporters, which know nothing of mixing."""
    for name, targets in graph().items():
        if name.startswith(("partitioners", "exporters")):
            assert {t for t in targets if t.startswith("datamix_cli")} <= {"datamix_cli.errors"}, (name, targets)


def test_no_module_is_more_than_a_few_hundred_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_project_import_in_benchmarks_examples_and_tests_resolves():
    """Scripts that no test runs (benchmarks) still import names that exist: moved code leaves no dangling import."""
    import importlib

    missing = []
    for folder in ("benchmarks", "examples", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if "triton_backends" in path.parts:
                continue  # run by Triton's Python backend, not importable here
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in PACKAGES:
                    module = importlib.import_module(node.module)
                    missing += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                                if not hasattr(module, a.name) and not _is_module(f"{node.module}.{a.name}")]
    assert not missing, missing


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
