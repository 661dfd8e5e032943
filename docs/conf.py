"""Sphinx configuration: pydata-sphinx-theme and MyST Markdown, as PyMC and ArviZ use.

Build with ``make docs`` (warnings are errors) or
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # resilient from this checkout, for autodoc

import resilient  # noqa: E402

project = "Resilient"
author = "The Resilient developers"
copyright = "2026, the Resilient developers"
version = release = resilient.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: numpydoc-style docstrings through napoleon; signatures keep their type hints.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"



html_theme = "pydata_sphinx_theme"
html_title = "Resilient"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}

# resilient.preflight, diagnose and write_report are thin wrappers (they import their module on call, so
# `import resilient` stays light); the reference shows the signature and docstring of the function each
# calls. Runs before napoleon (priority 100 < 500), which then turns the numpydoc sections into fields.
WRAPPED = {
    "resilient.preflight": "resilient.checks:preflight",
    "resilient.diagnose": "resilient.diagnostics:diagnose",
    "resilient.write_report": "resilient.report:write_report",
}


def _target(name):
    import importlib

    module, attribute = WRAPPED[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def _wrapped_docstring(app, what, name, obj, options, lines):
    if name in WRAPPED:
        import inspect

        lines[:] = inspect.getdoc(_target(name)).splitlines()


def _wrapped_signature(app, what, name, obj, options, signature, return_annotation):
    if name in WRAPPED:
        import inspect

        from sphinx.util.inspect import stringify_signature

        text = stringify_signature(inspect.signature(_target(name)), show_return_annotation=False)
        return text, return_annotation
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _wrapped_docstring, priority=100)
    app.connect("autodoc-process-signature", _wrapped_signature, priority=100)
