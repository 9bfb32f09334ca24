"""Docs cannot drift from the code: quoted code must exist, and every fused op links its derivation."""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import nptransformer.functional as F
from nptransformer.autograd import Function

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").rglob("*.md"))
DERIVATIONS = sorted((ROOT / "docs" / "derivations").glob("*.md"))
SECTIONS = ["Forward", "Shapes", "Scalar derivative", "Vectorized result", "Code map", "The test that checks it"]
QUOTE = re.compile(r"```python\n# ((?:nptransformer|tests|docs)/[\w/.]+\.py)\n(.*?)```", re.S)


def _lines(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


def _quotes():
    for doc in DOCS:
        for match in QUOTE.finditer(doc.read_text(encoding="utf-8")):
            yield pytest.param(doc, match.group(1), match.group(2), id=f"{doc.name}:{match.group(1)}:{match.start()}")


@pytest.mark.parametrize("doc,source,quoted", list(_quotes()))
def test_quoted_code_is_in_the_source(doc, source, quoted):
    path = ROOT / source
    assert path.exists(), f"{doc.name} quotes {source}, which does not exist"
    want, have = _lines(quoted), _lines(path.read_text(encoding="utf-8"))
    assert want, f"{doc.name} has an empty quote of {source}"
    n = len(want)
    assert any(have[i : i + n] == want for i in range(len(have) - n + 1)), (
        f"{doc.name} quotes lines that are not (contiguous, in order) in {source}:\n" + "\n".join(want)
    )


@pytest.mark.parametrize("doc", DERIVATIONS, ids=lambda p: p.name)
def test_derivation_has_the_six_sections_in_order(doc):
    headings = re.findall(r"^## (.+?)\s*$", doc.read_text(encoding="utf-8"), re.M)
    assert [h for h in headings if h in SECTIONS] == SECTIONS, f"{doc.name} sections: {headings}"
    assert QUOTE.search(doc.read_text(encoding="utf-8")), f"{doc.name} quotes no code in its code map"


def _fused_functions():
    """Every Function class defined in a nptransformer.functional module other than primitives."""
    for info in pkgutil.iter_modules(F.__path__):
        if info.name == "primitives":
            continue
        module = importlib.import_module(f"nptransformer.functional.{info.name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Function) and obj.__module__ == module.__name__:
                yield pytest.param(obj, id=f"{info.name}.{name}")


def test_the_fused_ops_are_found():
    assert len(list(_fused_functions())) >= 8


@pytest.mark.parametrize("fn", list(_fused_functions()))
def test_every_fused_op_links_an_existing_derivation(fn):
    doc = inspect.getdoc(fn) or ""
    links = re.findall(r"docs/derivations/[\w]+\.md", doc)
    assert links, f"{fn.__name__}'s docstring does not link its derivation"
    for link in links:
        assert (ROOT / link).exists(), f"{fn.__name__} links {link}, which does not exist"
    assert re.search(r"\bd\w*\s*=", doc), f"{fn.__name__}'s docstring should state its backward (d... = ...)"


def test_readme_example_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
