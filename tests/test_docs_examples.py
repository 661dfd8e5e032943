"""The documentation cannot rot: its runnable examples run, and the site builds with warnings as errors.

A Python example in ``docs/**/*.md`` marked runnable, as

    ```{code-block} python
    :class: run          (the default suite)  or  :class: run-slow  (the slow set)
    ```

or as a ``python`` fence whose first line is ``# run`` (or ``# run-slow``), is executed as one script per
page (a page reads like a notebook), in a fresh interpreter whose working directory is a temporary folder
and whose import path holds the repository (``examples.*`` imports): the default suite runs a page's
``run`` blocks in order; the slow set runs all its runnable blocks, ``run`` and ``run-slow``, in order.
Blocks without a mark are shown, not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: a fence (``` or more), its info string, its body; MyST's directive options (:class: run) open the body
_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M)


def examples(page: Path) -> dict[str, list[str]]:
    """The runnable Python blocks of ``page`` by kind (``run``, ``run-slow``), in page order."""
    return examples_in(page.read_text(encoding="utf-8"))


def examples_in(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"run": [], "run-slow": []}
    for match in _FENCE.finditer(text):
        info, body = match["info"].strip(), match["body"]
        lines = body.splitlines()
        if info in ("{code-block} python", "{code-block} python3", "{code} python"):
            options = []
            while lines and lines[0].startswith(":"):
                options.append(lines.pop(0))
            classes = [o.split(":", 2)[2].split() for o in options if o.startswith(":class:")]
            kind = next((c for group in classes for c in group if c in found), None)
        elif info in ("python", "python3") and lines and lines[0].strip() in ("# run", "# run-slow"):
            kind = lines.pop(0).strip()[2:]
        else:
            continue
        if kind:
            block = "\n".join(lines).strip("\n") + "\n"
            found["run-slow"].append(block)  # the slow script is the whole page: it may use the quick blocks' names
            if kind == "run":
                found["run"].append(block)
    return found


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)


def _cases(kind: str) -> list:
    """Pages with blocks of this kind; for ``run-slow``, pages with a block beyond their quick ones."""
    marks = [pytest.mark.slow] if kind == "run-slow" else []
    return [pytest.param(page, id=str(page.relative_to(DOCS)), marks=marks) for page in _pages()
            if len(examples(page)[kind]) > (len(examples(page)["run"]) if kind == "run-slow" else 0)]


def _run(page: Path, kind: str, tmp_path: Path, timeout: float) -> None:
    script = "\n".join(examples(page)[kind])
    (tmp_path / "example.py").write_text(script, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MPLBACKEND="Agg")
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (f"the {kind} examples of docs/{page.relative_to(DOCS)} failed:\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def test_the_guide_has_runnable_examples_and_the_extractor_finds_them():
    quick = [page for page in _pages() if examples(page)["run"]]
    assert DOCS / "getting-started.md" in quick
    sample = "```{code-block} python\n:class: run\n\nx = 1\n```\n\n```python\n# run-slow\ny = 2\n```\n\n```python\nz = 3\n```\n"
    assert examples_in(sample) == {"run": ["x = 1\n"], "run-slow": ["x = 1\n", "y = 2\n"]}


@pytest.mark.parametrize("page", _cases("run"))
def test_quick_examples_run(page, tmp_path):
    _run(page, "run", tmp_path, timeout=300)


@pytest.mark.parametrize("page", _cases("run-slow"))
def test_slow_examples_run(page, tmp_path):
    _run(page, "run-slow", tmp_path, timeout=900)


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """``make docs``: Sphinx, pydata-sphinx-theme, MyST and autodoc over the docstrings, every warning an
    error. Skipped locally without the ``docs`` extra; CI (CI=true) installs it, so there it must run."""
    import importlib.util

    missing = [name for name in ("sphinx", "pydata_sphinx_theme", "myst_parser")
               if importlib.util.find_spec(name) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the docs extra is not installed ({', '.join(missing)}): `make test` "
                        "installs .[all,test,docs]")
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    build = tmp_path / "html"
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                             "-d", str(tmp_path / "doctrees"), str(DOCS), str(build)],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    for page in ("index", "getting-started", "api", "benchmarks", "guide/native-models", "guide/loop"):
        assert (build / f"{page}.html").exists(), page
    api = (build / "api.html").read_text(encoding="utf-8")
    for name in ("resilient.sample", "resilient.compile", "resilient.preflight", "resilient.sample_many",
                 "resilient.sbc", "resilient.diagnose", "resilient.write_report", "resilient.Policy",
                 "resilient.SamplingFailed"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    shutil.rmtree(build, ignore_errors=True)
