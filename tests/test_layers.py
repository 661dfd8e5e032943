"""The layers (#21.3): core asks the adapters' declared capabilities (resilient.backend) instead of comparing
engine or backend names as strings, and reaches the adapters only through the registry."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = "numpyro|pymc|nutpie"
#: a name compared as a string: == "nutpie", "pymc" != x, x in ("numpyro", ...) (not a for loop over them)
COMPARED = re.compile(rf'(==|!=) *"({NAMES})"|"({NAMES})" *(==|!=)|\bin \("({NAMES})"')
FOR_LOOP = re.compile(rf'\bfor \w+ in \("({NAMES})"')
#: modules still comparing names, owned by other engineers at the time of #21.3 (see its report); each should ask
#: resilient.backend.capabilities instead, and leave this list.
PENDING: set[str] = set()
#: modules still importing an adapter module directly (the same owners): they should go through the registry.
PENDING_IMPORTS: set[str] = set()


def _core_modules():
    for path in sorted((ROOT / "resilient").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative != "resilient/backend.py":  # the registry names the adapters
            yield relative, path.read_text()


def test_core_compares_no_engine_or_backend_name_as_a_string():
    found = []
    for relative, text in _core_modules():
        if relative in PENDING:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if COMPARED.search(FOR_LOOP.sub("", code)):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == [], "ask resilient.backend.capabilities instead:\n" + "\n".join(found)


def test_core_never_imports_an_adapter_module():
    found = [relative for relative, text in _core_modules() if relative not in PENDING_IMPORTS
             and re.search(r"^\s*(from resilient\.adapters|import resilient\.adapters)", text, re.MULTILINE)]
    assert found == []


def test_the_ski_rental_state_is_an_object_the_registry_owns():
    """engine='auto' reads an EngineHistory (resilient.engine.HISTORY), not module counters an adapter writes."""
    from resilient import engine

    assert isinstance(engine.HISTORY, engine.EngineHistory)
    for name in ("_nutpie_compiles", "_pymc_seconds", "note_nutpie_compile"):
        assert not hasattr(engine, name), name
    nutpie = (ROOT / "adapters" / "nutpie" / "compiled.py").read_text()
    assert "HISTORY.note_compile(" in nutpie
