"""What a batch of fits is made of: the model as shipped to workers (:class:`ModelSpec`), one fit's job
(:class:`FitJob`), the per-fit seeds and settings, the statuses and the columns of ``summary.csv``.

Dependency rule: numpy and the standard library at import time; cloudpickle (with dask) inside
:meth:`ModelSpec.of`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resilient.errors import ResilientError
from resilient.loading import load_reference  # the one loader of model files, shared with the CLI
from resilient.loading import split_reference as _split_reference
from resilient.options import RunOptions
from resilient.policy import Policy

__all__ = ["FIT_STATUSES", "SUMMARY_COLUMNS", "ModelSpec", "FitJob", "data_fingerprint", "fit_seed", "run_settings",
           "manifest_of", "resolve_fit_timeout", "load_reference", "DATA_FRAME", "builds_bambi", "is_data_frame"]

#: the key a data set that is a data frame travels under in a job's ``data`` (a Bambi model's builder takes it as
#: its one positional argument)
DATA_FRAME = "__data_frame__"

#: what became of a fit. ``ok``: accepted by the loop; ``exhausted``: the caps ran out on a statistical
#: failure and the best attempt's draws were kept (their diagnostics fail); ``budget``: the policy's
#: time budget ran out (the finished draws are kept); ``failed``: the fit raised (preflight, model or
#: sampler error: nothing usable); ``lost``: the fit never finished because its worker died every
#: time Dask ran it, or it ran past ``fit_timeout`` (retried when the run is restarted).
FIT_STATUSES = ("ok", "exhausted", "budget", "failed", "lost")

#: columns of ``summary.csv``, one row per fit, in this order.
SUMMARY_COLUMNS = (
    "fit_id", "index", "status", "reason", "backend", "seconds", "compile", "compile_seconds", "attempts",
    "chains", "draws", "divergences", "max_rhat", "min_ess_bulk", "random_seed", "starts", "worker",
    "data_hash", "file",
)


@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets the model: a ``reference`` (``"path/to/file.py:name"`` or
    ``"package.module:name"``) it loads itself, or the object (pickled by cloudpickle: by reference
    for a function of an importable module, by value otherwise). ``key`` names it in the per-worker
    compile cache."""

    key: str
    reference: str | None = None
    obj: Any = None

    @classmethod
    def of(cls, model: Any) -> "ModelSpec":
        if isinstance(model, ModelSpec):
            return model
        from resilient.resolve import is_bambi_model

        if is_bambi_model(model):  # a template: built again on each data frame (its recipe, checked here)
            from resilient.backend import helper

            model = helper("pymc", "bambi").recipe_of(model)
        if isinstance(model, str):
            _split_reference(model)  # says what is wrong with a malformed reference, here and not on a worker
            path, _, name = model.rpartition(":")
            if path.endswith(".py"):
                path = str(Path(path).resolve())
            reference = f"{path}:{name}"
            if path.endswith(".py") and Path(path).is_file():  # an edited file is another model on every worker
                from resilient.loading import file_stamp

                return cls(key=f"ref:{reference}@{file_stamp(path)[2][:16]}", reference=reference)
            return cls(key=f"ref:{reference}", reference=reference)
        from resilient.resolve import is_pymc_model

        if is_pymc_model(model):
            raise ResilientError(
                "`model` must be a function for many fits, got a pm.Model, which carries one data set. Pass a "
                "function that builds and returns the pm.Model from its arguments (def model(x, y=None): ...).")
        if not callable(model):
            raise ResilientError(f"`model` must be a model function or a 'file.py:name' reference, got "
                                 f"{type(model).__name__}.")
        if hasattr(model, "fingerprint") and getattr(model, "builds_bambi", False):  # the same key in every process
            return cls(key="bambi:" + hashlib.sha1(model.fingerprint().encode()).hexdigest(), obj=model)
        import cloudpickle

        payload = cloudpickle.dumps(model)
        return cls(key="obj:" + hashlib.sha1(payload).hexdigest(), obj=model)

    @property
    def name(self) -> str:
        if self.reference is not None:
            return self.reference.rpartition(":")[2]
        return getattr(self.obj, "__name__", "model")

    def load(self) -> Any:
        return self.obj if self.reference is None else load_reference(self.reference)


def builds_bambi(obj: Any) -> bool:
    """A ``bmb.Model``, the recipe of one (the Bambi helper's ``BambiRecipe``) or a function that
    refers to bambi (a builder: ``def build(data): return bmb.Model(formula, data)``); imports nothing."""
    from resilient.resolve import _refers_to, is_bambi_model

    return (is_bambi_model(obj) or bool(getattr(obj, "builds_bambi", False))
            or (callable(obj) and not isinstance(obj, type) and _refers_to(obj, "bambi")))


def is_data_frame(value: Any) -> bool:
    """A pandas DataFrame (recognised by its class, without importing pandas)."""
    return any(c.__module__.split(".")[0] == "pandas" and c.__name__ == "DataFrame" for c in type(value).__mro__)


def _frame_digest(digest: Any, frame: Any) -> None:
    """A data frame's column names, dtypes (categories included), index and values into ``digest``."""
    import pandas as pd

    digest.update(repr([(str(c), repr(t)) for c, t in frame.dtypes.items()]).encode())
    try:
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    except TypeError:  # a cell pandas cannot hash (a list ...): the pickled frame stands in
        import pickle

        digest.update(pickle.dumps(frame))


@dataclass(frozen=True)
class FitJob:
    """One fit, as shipped to a worker. ``data``: the model function's keyword arguments;
    ``simulation``: an object with ``simulate(job) -> (data, context)`` and
    ``records(job, datatree, context) -> list[dict]`` (SBC's prior draw and ranks), or None."""

    fit_id: str
    index: int
    model: ModelSpec
    backend: str | None
    data: Mapping[str, Any] | None
    run: Mapping[str, Any]  # draws, tune, chains, target_accept, max_tree_depth, policy, fix, float32
    random_seed: int
    keep_draws: bool = True
    topic: str | None = None
    simulation: Any = None


def data_fingerprint(data: Mapping[str, Any] | None) -> str:
    """A short hash of a data set's values (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha1()
    for key in sorted(data or {}):
        value = data[key]
        digest.update(key.encode())
        if value is None:
            digest.update(b"None")
            continue
        if is_data_frame(value):
            _frame_digest(digest, value)
            continue
        try:
            array = np.ascontiguousarray(np.asarray(value))
        except Exception:  # noqa: BLE001 - an object numpy cannot hold: its repr stands in
            digest.update(repr(value).encode())
            continue
        if array.dtype == object:
            digest.update(repr(value).encode())
        else:
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def fit_seed(random_seed: int, index: int, stream: int = 0) -> int:
    """The seed of fit ``index``: fixed by the run's seed and the index, not by which worker runs it."""
    return int(np.random.SeedSequence([int(random_seed), int(index), int(stream)]).generate_state(1)[0] % 2**31)


def run_settings(options: RunOptions, *, fix: bool, float32: bool, engine: str = "auto") -> dict[str, Any]:
    """What each fit's job carries (and the manifest records) from the run's checked
    :class:`~resilient.options.RunOptions`: draws, tune, chains, target_accept, max_tree_depth, policy,
    the model options fix and float32, and the engine."""
    return {"draws": options.draws, "tune": options.tune, "chains": options.chains,
            "target_accept": options.target_accept, "max_tree_depth": options.max_tree_depth,
            "policy": options.policy, "fix": bool(fix), "float32": bool(float32), "engine": engine}


def manifest_of(kind: str, spec: ModelSpec, backend: str | None, run: Mapping[str, Any], random_seed: int,
                **extra: Any) -> dict[str, Any]:
    settings = {k: v for k, v in run.items() if k != "policy"}
    return {"kind": kind, "model": spec.key, "backend": backend, "run": settings,
            "policy": asdict(run["policy"]), "random_seed": int(random_seed), **extra}


def resolve_fit_timeout(fit_timeout: float | str | None, policy: Policy) -> float | None:
    """Seconds after which a running fit counts as stuck: ``"auto"`` is ``max(600, 3 * time_budget)``
    with a time budget and an hour without."""
    if fit_timeout == "auto":
        return max(600.0, 3.0 * policy.time_budget) if policy.time_budget else 3600.0
    if fit_timeout is None:
        return None
    if isinstance(fit_timeout, str) or isinstance(fit_timeout, bool) or not fit_timeout > 0:
        raise ResilientError(f"`fit_timeout` must be a positive number of seconds, None or 'auto', got {fit_timeout!r}.")
    return float(fit_timeout)
