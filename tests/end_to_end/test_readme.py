"""The README's promises: its first two commands are the ones CI and users run, and its Python runs; so does
the Python of every page in docs/."""

import json
import re

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
# Pages under docs/ with Python in them: each page's blocks run in order, in one namespace.
DOC_PAGES = [page for page in sorted((ROOT / "docs").glob("*.md")) if PYTHON_BLOCK.search(page.read_text())]
# What a page's Python must print (a substring of its output), where it prints something worth checking.
EXPECTED_OUTPUT = {"README.md": "layer1.0 flatten", "profile.md": "layer1.0", "manifest.md": "'protocol'"}


def run_python_blocks(path, monkeypatch, capsys) -> str:
    """Exec every ```python block of ``path`` in order in one namespace, from the repository root; return stdout."""
    monkeypatch.chdir(ROOT)
    blocks = PYTHON_BLOCK.findall(path.read_text())
    assert blocks, f"{path.name} has no python blocks"
    namespace = {"__name__": "__main__"}
    for block in blocks:
        exec(compile(block, str(path.relative_to(ROOT)), "exec"), namespace)
    return capsys.readouterr().out


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in [line.strip() for line in script.splitlines()]


def test_readme_python_blocks_run(monkeypatch, capsys):
    out = run_python_blocks(ROOT / "README.md", monkeypatch, capsys)
    assert EXPECTED_OUTPUT["README.md"] in out


@pytest.mark.parametrize("page", DOC_PAGES, ids=[page.name for page in DOC_PAGES])
def test_docs_python_blocks_run(page, monkeypatch, capsys):
    out = run_python_blocks(page, monkeypatch, capsys)
    assert EXPECTED_OUTPUT.get(page.name, "") in out


def test_docs_index_links_every_page():
    index = (ROOT / "docs" / "README.md").read_text()
    pages = {page.name for page in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages and all(f"]({name})" in index for name in pages), sorted(n for n in pages if f"]({n})" not in index)


def test_manifest_page_names_every_schema_field():
    """docs/manifest.md is the reference of every manifest field: each property the JSON Schema knows is named."""
    schema = json.loads((ROOT / "datamix_cli" / "artifacts" / "manifest.schema.json").read_text())
    page = (ROOT / "docs" / "manifest.md").read_text()

    def names(node):
        for name, sub in node.get("properties", {}).items():
            yield name
            yield from names(sub)
            yield from names(sub.get("items", {}))
        for sub in node.get("$defs", {}).values():
            yield from names(sub)

    missing = sorted({name for name in names(schema) if f"`{name}`" not in page})
    assert not missing, f"docs/manifest.md does not name: {missing}"
