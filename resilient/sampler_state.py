"""The sampler's state: what NUTS needs to continue a run without adapting again, as one record.

A :class:`SamplerState` holds, per chain, the position (unconstrained), the step size, the inverse
mass matrix (diagonal or dense, where the engine exposes it) and the counts of warm-up iterations and
draws done, with the engine's name, the random state, the settings the run used and a fingerprint of
the model and its data. Engines add what they alone can take back (``native``: NumPyro's whole
``HMCState``, leaf by leaf, so a resumed NumPyro run continues bitwise).

On disk it is ``state.json`` (everything but arrays) beside ``state-<digest>.npz`` (the arrays, named in the
JSON), written with every checkpoint chunk: plain JSON and NumPy files any later Python reads, never a pickle. On a result
it is the ``sampler_state`` group (:meth:`SamplerState.to_dataset`): step size and mass matrix per chain.

Functions here depend only on NumPy (and xarray for :meth:`SamplerState.to_dataset`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from resilient.jsonio import dumps

__all__ = ["SamplerState", "FORMAT", "model_fingerprint", "cached_fingerprint", "fingerprint_differences",
           "merge_states"]

#: the version of the files' layout; a reader refuses another one clearly
FORMAT = 1

JSON_NAME = "state.json"
#: the arrays' file in states written before the JSON named it (read, never written)
ARRAYS_NAME = "state.npz"
#: folder -> the arrays file this process saved there last, removed by the next save (a listing of the folder,
#: which holds every chunk file, at each chunk would cost a long run time quadratic in its chunks)
_LAST_ARRAYS: dict[str, str] = {}


@dataclass(frozen=True, eq=False)
class SamplerState:
    """Where a NUTS run stands, per chain (arrays have the chains of ``chains`` on their first axis).

    ``adaptation`` says what a resumed run takes back: ``"whole"``, the engine's whole state (NumPyro:
    ``native`` holds its ``HMCState``; the resumed run is the uninterrupted one, warm-up included);
    ``"reusable"``, the step size and mass matrix, set on the sampler, which samples with no warm-up (PyMC's
    NUTS); ``"re-adapt"``, neither (nutpie: a resumed run adapts again briefly from the saved positions).
    """

    engine: str
    chains: tuple[int, ...]
    positions: np.ndarray  #: (chains, dimension), unconstrained
    step_size: np.ndarray  #: (chains,)
    draws_done: np.ndarray  #: (chains,) post-warm-up draws done
    tune_done: np.ndarray  #: (chains,) warm-up iterations done
    inverse_mass_matrix: np.ndarray | None = None  #: (chains, dimension) diagonal or (chains, d, d) dense
    mass_matrix: str = "diag"  #: the adaptation the run asked for ("diag", "full", "low_rank", ...)
    adaptation: str = "reusable"
    #: the random state: ``seed`` (the run's), and what else the engine keeps (NumPyro: the key is in ``native``)
    random_state: Mapping[str, Any] = field(default_factory=dict)
    #: the run's NUTS settings (tune, target_accept, max_tree_depth, mass_matrix, chains)
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: :func:`model_fingerprint` of the model the run sampled
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    latent_names: tuple[str, ...] = ()
    #: the checkpoint's attempt number (set by the checkpoint that writes it)
    attempt: int | None = None
    #: engine-only arrays by name (NumPyro: ``HMCState`` leaves by their path); on disk packed per dtype
    native: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def dimension(self) -> int:
        return int(np.shape(self.positions)[-1])

    def chain_index(self, chain: int) -> int:
        return self.chains.index(chain)

    # -- files --------------------------------------------------------------------------------

    def _json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "engine": self.engine, "chains": list(self.chains),
            "draws_done": [int(n) for n in self.draws_done], "tune_done": [int(n) for n in self.tune_done],
            "step_size": [float(s) for s in self.step_size], "mass_matrix": self.mass_matrix,
            "mass_matrix_stored": None if self.inverse_mass_matrix is None else (
                "dense" if np.ndim(self.inverse_mass_matrix) == 3 else "diag"),
            "adaptation": self.adaptation, "random_state": dict(self.random_state),
            "settings": dict(self.settings), "fingerprint": dict(self.fingerprint),
            "latent_names": list(self.latent_names), "attempt": self.attempt,
            "native": _index(self.native),
        }

    def save(self, folder: str | os.PathLike) -> None:
        """Write the arrays to ``state-<digest>.npz``, then ``state.json`` naming that file, each atomically, then
        remove the arrays of earlier saves. The JSON is the one file whose replacement moves the state on: a
        process killed at any point leaves a JSON and the arrays it names, from the same save. (With one arrays
        file rewritten in place, a kill between the two writes paired the last chunk's arrays with the chunk
        before's counts, and a resumed NumPyro run went on from 50 draws further than it wrote.)"""
        folder = Path(folder)
        arrays = {"positions": np.asarray(self.positions)}
        if self.inverse_mass_matrix is not None:
            arrays["inverse_mass_matrix"] = np.asarray(self.inverse_mass_matrix)
        arrays.update(_pack(self.native))
        buffer = io.BytesIO()  # built in memory and written at once: zipfile's many small writes cost 4x more
        np.savez(buffer, **arrays)
        name = f"state-{hashlib.sha1(buffer.getbuffer()).hexdigest()[:16]}.npz"
        temporary = folder / f".{name}.tmp"
        temporary.write_bytes(buffer.getbuffer())
        os.replace(temporary, folder / name)
        text = dumps({**self._json(), "arrays": name}, default=_json_default)
        temporary = folder / f".{JSON_NAME}.tmp"
        temporary.write_text(text)
        os.replace(temporary, folder / JSON_NAME)
        key = os.path.abspath(folder)
        previous = _LAST_ARRAYS.get(key)  # a folder's first save here looks for every earlier one (a killed run's)
        for old in [folder / previous] if previous else [*folder.glob("state-*.npz"), folder / ARRAYS_NAME]:
            if old.name != name:
                old.unlink(missing_ok=True)
        _LAST_ARRAYS[key] = name

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "SamplerState":
        """Read what :meth:`save` wrote; a ``ValueError`` saying why for files of another format."""
        folder = Path(folder)
        for tries in range(3):  # a running save removes the arrays an older JSON named just after replacing it
            meta = json.loads((folder / JSON_NAME).read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{folder / JSON_NAME} is a sampler state of format {meta.get('format')!r}; this "
                                 f"Resilient reads format {FORMAT}.")
            try:
                with np.load(folder / meta.get("arrays", ARRAYS_NAME), allow_pickle=False) as arrays:
                    loaded = {name: np.array(arrays[name]) for name in arrays.files}
                break
            except FileNotFoundError:
                if tries == 2:
                    raise
        return cls(
            engine=meta["engine"], chains=tuple(meta["chains"]), positions=loaded["positions"],
            step_size=np.asarray(meta["step_size"], np.float64),
            draws_done=np.asarray(meta["draws_done"], np.int64), tune_done=np.asarray(meta["tune_done"], np.int64),
            inverse_mass_matrix=loaded.get("inverse_mass_matrix"), mass_matrix=meta.get("mass_matrix", "diag"),
            adaptation=meta.get("adaptation", "reusable"), random_state=meta.get("random_state", {}),
            settings=meta.get("settings", {}), fingerprint=meta.get("fingerprint", {}),
            latent_names=tuple(meta.get("latent_names", ())), attempt=meta.get("attempt"),
            native=_unpack(meta.get("native") or {}, loaded),
        )

    # -- on a result ---------------------------------------------------------------------------

    def to_dataset(self) -> Any:
        """The ``sampler_state`` group: per chain the step size, the inverse mass matrix (diagonal:
        ``(chain, unconstrained)``; dense: ``(chain, unconstrained, unconstrained_bis)``), the position
        and the counts; the engine, adaptation, settings and fingerprint in its attributes."""
        import xarray as xr

        dims = ("chain", "unconstrained")
        variables: dict[str, Any] = {
            "step_size": (("chain",), np.asarray(self.step_size, np.float64)),
            "position": (dims, np.asarray(self.positions, np.float64)),
            "draws_done": (("chain",), np.asarray(self.draws_done, np.int64)),
            "tune_done": (("chain",), np.asarray(self.tune_done, np.int64)),
        }
        if self.inverse_mass_matrix is not None:
            matrix = np.asarray(self.inverse_mass_matrix, np.float64)
            variables["inverse_mass_matrix"] = (dims if matrix.ndim == 2 else (*dims, "unconstrained_bis"), matrix)
        attrs = {"engine": self.engine, "adaptation": self.adaptation, "mass_matrix": self.mass_matrix,
                 "settings": dumps(dict(self.settings), default=_json_default),
                 "fingerprint": dumps(dict(self.fingerprint), default=_json_default),
                 "latent_names": dumps(list(self.latent_names))}
        return xr.Dataset(variables, coords={"chain": np.asarray(self.chains)}, attrs=attrs)

    @classmethod
    def from_dataset(cls, dataset: Any) -> "SamplerState":
        """The state a result's ``sampler_state`` group holds (what :meth:`to_dataset` wrote): positions, step
        sizes, mass matrices, counts, settings and fingerprint; engine-only arrays (``native``) are not in it."""
        attrs = dict(dataset.attrs)

        def loaded(name: str, default: Any) -> Any:
            text = attrs.get(name)
            return json.loads(text) if isinstance(text, str) else (default if text is None else text)

        matrix = dataset["inverse_mass_matrix"].values if "inverse_mass_matrix" in dataset else None
        return cls(
            engine=str(attrs.get("engine", "")), chains=tuple(int(c) for c in dataset["chain"].values),
            positions=np.asarray(dataset["position"].values, np.float64),
            step_size=np.asarray(dataset["step_size"].values, np.float64),
            draws_done=np.asarray(dataset["draws_done"].values, np.int64),
            tune_done=np.asarray(dataset["tune_done"].values, np.int64),
            inverse_mass_matrix=None if matrix is None else np.asarray(matrix, np.float64),
            mass_matrix=str(attrs.get("mass_matrix", "diag")), adaptation=str(attrs.get("adaptation", "reusable")),
            settings=loaded("settings", {}), fingerprint=loaded("fingerprint", {}),
            latent_names=tuple(loaded("latent_names", ())))


def _index(native: Mapping[str, Any]) -> dict[str, list]:
    """Where each engine array sits in the packed arrays: name -> [dtype, offset, shape]. The arrays are
    packed one flat array per dtype (``native/<dtype>``): an .npz entry costs about 0.2 ms to write, and
    NumPyro's state has two dozen small arrays."""
    offsets: dict[str, int] = {}
    index = {}
    for name in sorted(native):
        array = np.asarray(native[name])
        kind = array.dtype.str
        index[name] = [kind, offsets.get(kind, 0), list(array.shape)]
        offsets[kind] = offsets.get(kind, 0) + array.size
    return index


def _pack(native: Mapping[str, Any]) -> dict[str, np.ndarray]:
    groups: dict[str, list[np.ndarray]] = {}
    for name in sorted(native):
        array = np.asarray(native[name])
        groups.setdefault(array.dtype.str, []).append(array.reshape(-1))
    return {f"native/{kind}": np.concatenate(parts) for kind, parts in groups.items()}


def _unpack(index: Mapping[str, Any], loaded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    found = {}
    for name, (kind, offset, shape) in dict(index).items():
        size = int(np.prod(shape, dtype=np.int64))
        found[name] = np.array(loaded[f"native/{kind}"][offset:offset + size]).reshape(shape)
    return found


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def merge_states(known: Mapping[int, SamplerState], new: SamplerState) -> dict[int, SamplerState]:
    """``known`` (one state per chain) with the chains of ``new`` replaced by theirs."""
    merged = dict(known)
    for row, chain in enumerate(new.chains):
        merged[chain] = select(new, [row])
    return merged


def select(state: SamplerState, rows: Sequence[int]) -> SamplerState:
    """The state of the chains at ``rows`` (positions in ``state.chains``)."""
    rows = list(rows)
    pick = (lambda a: None if a is None else np.asarray(a)[rows])
    native = {name: np.asarray(value)[rows] for name, value in state.native.items()} if rows != list(
        range(len(state.chains))) else state.native
    return replace(state, chains=tuple(state.chains[r] for r in rows), positions=pick(state.positions),
                   step_size=pick(state.step_size), draws_done=pick(state.draws_done),
                   tune_done=pick(state.tune_done), inverse_mass_matrix=pick(state.inverse_mass_matrix),
                   native=native)


def stack(states: Sequence[SamplerState]) -> SamplerState:
    """One state over the chains of ``states`` (each for some chains), in chain order."""
    rows = sorted(((chain, state, row) for state in states for row, chain in enumerate(state.chains)),
                  key=lambda entry: entry[0])
    first = rows[0][1]
    cat = (lambda get: np.stack([np.asarray(get(state))[row] for _, state, row in rows]))
    matrices = [state.inverse_mass_matrix for _, state, _ in rows]
    same_shape = all(m is not None for m in matrices) and len({np.shape(m)[1:] for m in matrices}) == 1
    natives = set.intersection(*(set(state.native) for _, state, _ in rows)) if first.native else set()
    return replace(first, chains=tuple(chain for chain, _, _ in rows), positions=cat(lambda s: s.positions),
                   step_size=cat(lambda s: s.step_size), draws_done=cat(lambda s: s.draws_done),
                   tune_done=cat(lambda s: s.tune_done),
                   inverse_mass_matrix=cat(lambda s: s.inverse_mass_matrix) if same_shape else None,
                   native={name: np.stack([np.asarray(s.native[name])[row] for _, s, row in rows])
                           for name in natives})


# -- fingerprints ---------------------------------------------------------------------------------


def _digest(value: Any) -> str:
    array = np.asarray(value)
    if array.dtype.kind in "biufc":
        payload = (str(array.dtype) + str(array.shape)).encode() + np.ascontiguousarray(array).tobytes()
    else:
        payload = repr(value).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def model_fingerprint(compiled: Any) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: the model (its name, latents with
    their sizes in the unconstrained vector, sites with their kind and family) and its data (a digest
    of each observed site, each ``pm.Data`` and each data argument of a model function)."""
    inner = getattr(compiled, "inner", compiled)  # nutpie wraps the PyMC (or NumPyro) compiled model
    blocks = compiled.blocks()
    latents = {name: int(blocks[name].stop - blocks[name].start) for name in compiled.latent_names}
    sites = {}
    for name, site in dict(getattr(compiled, "sites", {}) or {}).items():
        family = getattr(site, "family", None) or type(getattr(site, "used", None)).__name__
        sites[name] = f"{getattr(site, 'kind', '?')} {family}"
    data = {f"observed `{name}`": _digest(value) for name, value in compiled.observed_data().items()}
    layout = getattr(compiled, "datatree_layout", None)
    constant = ((layout() or {}).get("constant_data") or {}) if layout is not None else {}
    data.update({f"data `{name}`": _digest(value) for name, value in constant.items()})
    arguments = getattr(inner, "_arguments", None)  # a NumPyro model function's arguments
    if arguments is not None:
        try:
            import jax

            joined = arguments.join(arguments.values)
            for path, leaf in jax.tree_util.tree_flatten_with_path(joined)[0]:
                data[f"argument {_argument_name(path)}"] = _digest(leaf)
        except Exception:  # noqa: BLE001 - the observed sites' digests still tell data sets apart
            pass
    noncentered = sorted(name for name, site in dict(getattr(compiled, "sites", {}) or {}).items()
                         if getattr(site, "noncentered", False))
    return {"model": str(getattr(compiled, "name", "model")), "latents": latents, "sites": sites,
            "precision": "float32" if getattr(compiled, "float32", False) else "float64", "data": data,
            "noncentered": noncentered}


def cached_fingerprint(compiled: Any) -> dict[str, Any]:
    """:func:`model_fingerprint` of ``compiled``, computed once per compiled model (the data are hashed once)."""
    found = getattr(compiled, "_resilient_fingerprint", None)
    if found is None:
        found = model_fingerprint(compiled)
        try:
            compiled._resilient_fingerprint = found
        except AttributeError:  # a compiled model that takes no new attributes: hashed each time
            pass
    return found


def _argument_name(path: Any) -> str:
    """``#1`` for the model function's second positional argument, ```y``` for its keyword ``y``."""
    import jax

    text = jax.tree_util.keystr(path)  # "[0][1]" for args[1], "[1]['y']" for kwargs y
    keyword = re.match(r"\[1\]\['([^']*)'\](.*)", text)
    if keyword:
        return f"`{keyword.group(1)}`{keyword.group(2)}"
    positional = re.match(r"\[0\]\[(\d+)\](.*)", text)
    return f"#{positional.group(1)}{positional.group(2)}" if positional else text


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any], *,
                            saved_label: str = "the checkpoint's") -> list[str]:
    """How ``current`` (this call's model and data) differs from ``saved`` (the checkpoint's), in words;
    empty when they agree."""
    found = []
    if saved.get("model") != current.get("model"):
        found.append(f"the model is {current.get('model')!r}, {saved_label} is {saved.get('model')!r}")
    old, new = dict(saved.get("latents", {})), dict(current.get("latents", {}))
    if old != new:
        gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        resized = sorted(n for n in set(old) & set(new) if old[n] != new[n])
        parts = ([f"latents {', '.join(f'`{n}`' for n in added)} are new"] if added else []) + (
            [f"latents {', '.join(f'`{n}`' for n in gone)} are missing"] if gone else []) + (
            [f"`{n}` has {new[n]} unconstrained values, not {old[n]}" for n in resized])
        found.append("the model's latents differ: " + "; ".join(parts))
    old_sites, new_sites = dict(saved.get("sites", {})), dict(current.get("sites", {}))
    changed = sorted(n for n in set(old_sites) & set(new_sites) if old_sites[n] != new_sites[n])
    if changed:
        found.append("sites changed: " + "; ".join(f"`{n}` is {new_sites[n]!r}, was {old_sites[n]!r}"
                                                  for n in changed))
    if saved.get("precision") and saved.get("precision") != current.get("precision"):
        found.append(f"the model runs in {current.get('precision')}, {saved_label} in {saved.get('precision')}")
    old_data, new_data = dict(saved.get("data", {})), dict(current.get("data", {}))
    if old_data != new_data:
        names = sorted(n for n in set(old_data) | set(new_data) if old_data.get(n) != new_data.get(n))
        found.append("the data differ: " + ", ".join(
            f"{n} ({'new' if n not in old_data else 'missing' if n not in new_data else 'other values'})"
            for n in names))
    return found
