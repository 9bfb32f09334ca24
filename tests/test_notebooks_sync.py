"""The notebooks live in git twice: as jupytext py:percent text (what reviewers read and diff) and
as .ipynb (what Jupyter opens). Both must hold the same cells, the .ipynb no outputs, and every
notebook must open with what you will learn and end with exercises.

After editing a notebook's .py, regenerate its pair with ``jupytext --sync notebooks/NN_name.py``
(it keeps the existing cell ids, so the .ipynb diff shows only what changed).
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="module")
def jupytext():
    return pytest.importorskip("jupytext")


def _cells(notebook):
    return [(cell.cell_type, cell.source, cell.metadata.get("tags", [])) for cell in notebook.cells]


def test_notebooks_are_numbered_from_01_without_gaps():
    numbers = [int(p.name[:2]) for p in SOURCES]
    assert numbers == list(range(1, len(numbers) + 1)), [p.name for p in SOURCES]
    assert len(numbers) >= 6


def test_every_ipynb_has_its_text_source():
    orphans = [p.name for p in NOTEBOOK_DIR.glob("*.ipynb") if not p.with_suffix(".py").exists()]
    assert not orphans, f"notebooks without a py:percent source: {orphans}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_holds_the_same_cells_as_its_py(source, jupytext):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `jupytext --sync notebooks/{source.name}`"
    expected, committed = jupytext.read(source), jupytext.read(paired)
    assert _cells(committed) == _cells(expected), (
        f"{paired.name} and {source.name} differ: run `jupytext --sync notebooks/{source.name}`"
    )
    assert committed.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_has_no_outputs_and_no_execution_counts(source):
    paired = source.with_suffix(".ipynb")
    if not paired.exists():
        pytest.fail(f"{paired.name} is missing: run `jupytext --sync notebooks/{source.name}`")
    notebook = json.loads(paired.read_text(encoding="utf-8"))
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{paired.name} cell {i} has outputs: strip them"
            assert cell["execution_count"] is None, f"{paired.name} cell {i} has an execution count: strip it"


def _text_cells(source):
    """(header, body) of every ``# %%`` cell of a py:percent file, the YAML header left out."""
    text = source.read_text(encoding="utf-8")
    for cell in re.split(r"^(?=# %%)", text, flags=re.M)[1:]:
        header, _, body = cell.partition("\n")
        yield header, body


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_opens_with_what_you_will_learn_and_ends_with_exercises(source):
    cells = list(_text_cells(source))
    first_header, first_body = cells[0]
    last_header, last_body = cells[-1]
    assert first_header == "# %% [markdown]" and re.search(r"^# ## What you will learn$", first_body, re.M), (
        f"{source.name} must open with a markdown cell holding '## What you will learn'"
    )
    assert last_header == "# %% [markdown]" and last_body.startswith("# ## Exercises\n"), (
        f"{source.name} must end with a markdown cell '## Exercises'"
    )
    assert re.search(r"^# 1\. ", last_body, re.M), f"{source.name}: the exercises should be a numbered list"


INDEX = NOTEBOOK_DIR.parent / "docs" / "index.md"


def test_the_course_index_lists_every_notebook_and_links_only_existing_files():
    text = INDEX.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", text)
    missing = sorted({link for link in links if not (INDEX.parent / link).exists()})
    assert not missing, f"docs/index.md links files that do not exist: {missing}"
    for source in SOURCES:
        assert f"](../notebooks/{source.stem}.ipynb)" in text, f"docs/index.md does not list {source.name}"
