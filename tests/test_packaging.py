"""Honest packaging (#21.6): the core plus one extra per backend, and a user with one backend is served.

The fast tests read pyproject.toml: every package folder is installed, every extra the design names
exists, and the error for a missing backend names the extra. The slow one builds a fresh virtual
environment with ``pip install <repo>[numpyro]`` only (from PyPI: several minutes) and samples there.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: where each installed package's files live in the repository (pyproject's package-dir, else the dotted path)
PACKAGE_DIR = PYPROJECT["tool"]["setuptools"].get("package-dir", {})
#: what the design (issue #21.6) puts in the core; each backend and Dask is an extra
BACKEND_PACKAGES = {"numpyro": {"jax", "numpyro", "funsor"}, "pymc": {"pymc", "nutpie"}, "dask": {"dask"}}


def _name(requirement: str) -> str:
    for stop in "[<>=!~; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def _folder(package: str) -> Path:
    for prefix, folder in sorted(PACKAGE_DIR.items(), key=lambda item: -len(item[0])):
        if package == prefix or package.startswith(prefix + "."):
            return ROOT / folder / Path(*package[len(prefix):].lstrip(".").split(".")) if package != prefix else ROOT / folder
    return ROOT / Path(*package.split("."))


def test_core_dependencies_hold_no_backend_and_each_extra_its_backend():
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {name: {_name(r) for r in reqs} for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    assert not core & set().union(*BACKEND_PACKAGES.values(), {"pytensor", "numba", "distributed"})
    assert {"numpy", "arviz", "netcdf4", "matplotlib", "rich", "jinja2"} <= core
    for extra, packages in BACKEND_PACKAGES.items():
        assert packages <= extras[extra], (extra, extras[extra])
    all_extra = " ".join(PYPROJECT["project"]["optional-dependencies"]["all"])
    assert all(name in all_extra for name in BACKEND_PACKAGES), all_extra
    assert {"sphinx", "pydata-sphinx-theme", "myst-parser"} <= extras["docs"]


def test_every_package_folder_and_data_file_is_installed():
    """pyproject lists packages by hand (adapters/ installs as resilient.adapters): a new sub-package
    (resilient/report/, resilient/batch/) or template folder must be listed, or a pip install lacks it."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {}
    for package in listed:
        folders[_folder(package)] = package
    on_disk = {path.parent for top in ("resilient", "adapters") for path in (ROOT / top).rglob("__init__.py")}
    missing = sorted(str(p.relative_to(ROOT)) for p in on_disk if p not in folders)
    assert not missing, f"package folders not in pyproject.toml's [tool.setuptools] packages: {missing}"
    data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    unshipped = []
    for top in ("resilient", "adapters"):
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            owners = [(folder, package) for folder, package in folders.items() if folder in path.parents]
            shipped = False
            for folder, package in owners:
                relative = path.relative_to(folder).as_posix()
                if any(fnmatch.fnmatch(relative, glob) for glob in data.get(package, [])):
                    shipped = True
            if not shipped:
                unshipped.append(str(path.relative_to(ROOT)))
    assert not unshipped, f"data files no package-data glob ships: {unshipped}"


def test_the_wheel_holds_every_package_module_and_data_file(tmp_path):
    """A non-editable install gets what the checkout has: the wheel built from a copy of the sources holds every
    module of every package folder (resilient/batch/, resilient/sbc/, resilient/report/, the adapters) and the
    data files (templates, report.schema.json). Built without build isolation: setuptools is in the venv."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("resilient", "adapters"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("resilient-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = set()
    for top, installed_as in (("resilient", "resilient"), ("adapters", "resilient/adapters")):
        for path in (source / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                expected.add(f"{installed_as}/{path.relative_to(source / top).as_posix()}")
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel: {missing}"
    for package in ("batch", "sbc", "report"):
        assert f"resilient/{package}/__init__.py" in names, package


def test_a_missing_backend_names_the_extra_to_install(monkeypatch):
    from resilient import backend
    from resilient.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "pymc", None)  # hidden, as if not installed
    with pytest.raises(BackendUnavailableError, match=r'pip install "resilient\[pymc\]"'):
        backend.get_adapter("pymc")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(BackendUnavailableError, match=r'sample_many needs the `distributed` package.*'
                                                       r'pip install "resilient\[dask\]"'):
        backend.require("distributed", "sample_many")


NUMPYRO_ONLY = textwrap.dedent('''
    import sys

    import resilient

    assert "jax" not in sys.modules, "import resilient imported jax"

    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from resilient.model import sample as site

    def native(y=None):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(mu, 1), obs=y)

    def shared(y):
        mu = site("mu", resilient.Normal(0, 1))
        site("y", resilient.Normal(mu, 1), obs=y)

    y = np.array([0.3, -0.2, 0.8, 0.1])
    run = dict(draws=200, tune=200, chains=2, random_seed=1, progressbar=False)
    a = resilient.sample(native, y=y, **run)
    b = resilient.sample(shared, y=y, backend="numpyro", **run)
    for data in (a, b):
        # 200 draws, or more where the loop ran the chains longer (more_draws)
        assert data.posterior["mu"].shape[0] == 2 and data.posterior["mu"].shape[1] >= 200, data.posterior["mu"].shape
    try:
        resilient.sample(shared, y=y, backend="pymc", **run)
    except resilient.BackendUnavailableError as error:
        print("PYMC-ERROR", error)
    else:
        raise AssertionError("backend='pymc' sampled without PyMC installed")
    heavy = sorted(m for m in ("pymc", "pytensor", "nutpie", "numba", "dask", "distributed") if m in sys.modules)
    print("HEAVY", ",".join(heavy))
    try:
        resilient.sample_many(shared, [{"y": y}], out="many-without-dask")
    except Exception as error:  # the extra to install, not a ModuleNotFoundError from inside the run
        print("DASK-ERROR", type(error).__name__, str(error).replace("\\n", " "))
    else:
        raise AssertionError("sample_many ran without dask installed")
''')


@pytest.mark.slow
def test_numpyro_extra_alone_imports_and_samples_without_pymc(tmp_path):
    """A fresh venv with ``pip install <repo>[numpyro]`` (from PyPI; a few minutes): import resilient, sample a
    NumPyro function and a shared-API model on NumPyro, never import PyMC/PyTensor/nutpie/Numba/Dask, and
    name the extra when PyMC is asked for."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("resilient", "adapters"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{source}[numpyro]"],
                             capture_output=True, text=True, timeout=1500)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    installed = {line.split("==")[0] for line in listed.split()}
    assert {"numpyro", "jax", "funsor", "arviz"} <= installed
    assert not installed & {"pymc", "pytensor", "nutpie", "numba", "dask", "distributed"}, sorted(installed)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run([str(python), "-c", NUMPYRO_ONLY], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("PYMC-ERROR", "HEAVY")))
    assert lines["HEAVY"].strip() == "", f"imported without being asked: {lines['HEAVY']}"
    assert 'pip install "resilient[pymc]"' in lines["PYMC-ERROR"], lines["PYMC-ERROR"]
    dask = next(line for line in result.stdout.splitlines() if line.startswith("DASK-ERROR"))
    assert 'pip install "resilient[dask]"' in dask, dask
