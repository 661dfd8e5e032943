"""Persistent compilation caches (issue #24 item 2, resilient/caches.py): where they live, the opt-out, and that a
NumPyro run really writes JAX's cache (what it saves is measured by benchmarks/caches.py, not asserted here)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resilient import caches

ROOT = Path(__file__).resolve().parents[1]


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RESILIENT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert caches.cache_root() == tmp_path / "xdg" / "resilient"
    monkeypatch.setenv("RESILIENT_CACHE_DIR", str(tmp_path / "mine"))
    assert caches.cache_root() == tmp_path / "mine"
    for off in ("off", "0", "False", "no"):
        monkeypatch.setenv("RESILIENT_CACHE", off)
        assert not caches.caches_enabled()
    monkeypatch.setenv("RESILIENT_CACHE", "on")
    assert caches.caches_enabled()


def _child(code: str, env: dict[str, str]) -> str:
    import os

    # the suite's own JAX cache (tests/conftest.py sets JAX_COMPILATION_CACHE_DIR) is a user's setting: not here
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**base, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_users_own_jax_cache_directory_is_kept_and_off_means_off(tmp_path):
    code = """
        import jax
        from resilient.caches import enable_jax_cache
        {setup}
        print(enable_jax_cache(), jax.config.jax_compilation_cache_dir)
    """
    theirs = tmp_path / "theirs"
    out = _child(code.format(setup=f"jax.config.update('jax_compilation_cache_dir', {str(theirs)!r})"),
                 {"RESILIENT_CACHE_DIR": str(tmp_path / "ours")})
    assert out == f"{theirs} {theirs}"
    assert _child(code.format(setup=""), {"RESILIENT_CACHE": "off"}) == "None None"
    assert _child(code.format(setup=""), {"RESILIENT_CACHE_DIR": str(tmp_path / "ours")}) == \
        f"{tmp_path / 'ours' / 'jax'} {tmp_path / 'ours' / 'jax'}"


SAMPLE = """
    import warnings, numpy as np, numpyro, numpyro.distributions as dist, resilient
    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        numpyro.sample("y", dist.Normal(mu, 1), obs=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resilient.sample(model, y=np.arange(5.0), draws=100, tune=100, chains=2, random_seed=1, progressbar=False)
    print("sampled")
"""


@pytest.mark.slow
@pytest.mark.numpyro
def test_a_numpyro_run_writes_the_jax_cache_and_the_opt_out_writes_nothing(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    # every compilation is written, however fast this machine compiles (Resilient's floor is 0.2 s)
    assert _child("import jax; jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n" + SAMPLE.strip()
                  .replace("\n    ", "\n"), {"RESILIENT_CACHE_DIR": str(on)}) == "sampled"
    assert any(p.is_file() for p in (on / "jax").rglob("*")), "JAX wrote compiled programs to the cache"
    assert _child(SAMPLE, {"RESILIENT_CACHE_DIR": str(off), "RESILIENT_CACHE": "off"}) == "sampled"
    assert not off.exists() or not any(p.is_file() for p in off.rglob("*"))
