"""``resilient.resume`` (this module: resilient.resumption): continue a checkpointed run from its sampler state, on every engine.

A run stopped at any moment (SIGKILL, a pre-empted node, Ctrl-C, a time budget) leaves its finished
chunks and its :class:`~resilient.sampler_state.SamplerState` in its checkpoint folder. Resuming reads
them, refuses another model, other data or other settings (naming the difference), and samples only the
draws each chain still lacks, from the saved positions with the saved adaptation:

- NumPyro: the whole ``HMCState`` (step size, mass matrix, the dual-averaging and Welford state, the
  random key) is taken back, so the continuation is the uninterrupted run, bitwise; a run stopped in
  warm-up continues its warm-up where it stopped.
- PyMC's NUTS: the NUTS step gets the saved step size and a potential with the saved mass matrix, and
  samples with ``tune=0`` from the saved positions (a new random stream: the draws agree with an
  uninterrupted run's within Monte Carlo error, not bitwise).
- nutpie takes neither a step size nor a mass matrix back: it adapts again briefly
  (:data:`READAPT_TUNE` iterations at most, starting from the saved positions and step size), and the
  attempt log says so.

The result holds exactly the draws asked for per chain: the checkpoint's first ones, then the new ones.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from resilient.backend import Chunk, NUTSSettings, capabilities
from resilient.errors import ResilientError, warn

__all__ = ["resume_run", "READAPT_TUNE", "checkpoint_settings", "continuation_tune", "counted_on"]

#: warm-up iterations a resumed nutpie run adapts again for (at most; never more than the run's own tune)
READAPT_TUNE = 100

#: run options a resume takes from the checkpoint when not given, and refuses when given otherwise
COMPARED = ("chains", "tune", "target_accept", "random_seed", "max_tree_depth", "mass_matrix")


def checkpoint_settings(path: str) -> dict[str, Any]:
    """The run options of the checkpoint's run that :data:`COMPARED` names, and its ``draws``, where the
    checkpoint records them (``meta.json``; the sampler state for the tree depth and mass matrix)."""
    from resilient.checkpoint import read_meta, read_state

    meta = read_meta(path)
    found = {name: meta[name] for name in ("draws", "chains", "tune", "target_accept", "random_seed") if name in meta}
    try:
        state = read_state(path)
    except ResilientError:
        return found
    if state.attempt in (None, 1):  # a later attempt's settings are a remedy's, not the call's
        for name in ("max_tree_depth", "mass_matrix"):
            if name in state.settings:
                found[name] = state.settings[name]
    return found


def _refuse_other_settings(folder: Path, meta: dict[str, Any], state: Any, options: Any) -> None:
    given = {name: getattr(options, name) for name in COMPARED}
    recorded = {name: meta.get(name) for name in ("chains", "tune", "target_accept", "random_seed")}
    if state.attempt in (None, 1):
        recorded.update({name: state.settings.get(name) for name in ("max_tree_depth", "mass_matrix")})
    differ = [f"{name}={given[name]!r} (the checkpoint's run: {recorded[name]!r})" for name in recorded
              if recorded[name] is not None and name in given and given[name] != recorded[name]
              and not (isinstance(given[name], float) and np.isclose(given[name], recorded[name]))]
    if differ:
        raise ResilientError(
            f"Resume refused: {'; '.join(differ)}. A resumed run continues the run in {folder} with its settings; "
            "leave these out (resilient.resume takes them from the checkpoint) or start a new run.")


def continuation_tune(state: Any, tune: int) -> int:
    """The warm-up to ask an engine for when it continues ``state``'s run (a resume, or the loop's ``more_draws``):
    the run's own ``tune`` where the engine's whole state continues it (NumPyro: a finished warm-up runs no more),
    a short re-adaptation where the engine takes no adaptation back (nutpie: :data:`READAPT_TUNE` at most), and
    none where the step size and mass matrix are set on the sampler (PyMC's NUTS)."""
    if state.adaptation == "whole":
        return int(tune)
    if state.adaptation == "re-adapt":
        return max(1, min(int(tune or READAPT_TUNE), READAPT_TUNE))
    return 0


def counted_on(new: Any, saved: Any, done: Any) -> Any:
    """A continuation's sampler state (``new``, its chains' counts from 0) counted as the whole run's: ``done``
    (per chain of ``new``, or one number) draws before it, the saved run's warm-up (plus a re-adaptation's), and
    the saved run's fingerprint."""
    from resilient.sampler_state import SamplerState

    if not isinstance(new, SamplerState):
        return new
    rows = [saved.chain_index(chain) for chain in new.chains]
    before = np.broadcast_to(np.asarray(done, np.int64), (len(new.chains),))
    tune_done = np.asarray(saved.tune_done, np.int64)[rows]
    if saved.adaptation == "whole":  # the saved warm-up where it was over (a warm start's window is shorter than
        # the schedule the continuation counts), the continuation's where it was cut off mid-way
        finished = np.asarray(saved.draws_done, np.int64)[rows] > 0
        tune_done = np.where(finished, tune_done, np.asarray(new.tune_done, np.int64))
    elif saved.adaptation == "re-adapt":
        tune_done = tune_done + np.asarray(new.tune_done, np.int64)
    return replace(new, draws_done=before + np.asarray(new.draws_done, np.int64), tune_done=tune_done,
                   fingerprint=saved.fingerprint)


def _compiled_for(sampler: Any, engine: str, state: Any) -> tuple[Any, Any]:
    """The compiled model of ``sampler``'s model that runs ``engine`` in the checkpoint's precision."""
    from resilient.backend import get_adapter
    from resilient.model import NativeModel

    language = capabilities(engine).language
    model = sampler.model
    if isinstance(model, NativeModel) and model.backend not in (language, *capabilities(engine).foreign_native):
        raise ResilientError(f"Resume refused: the checkpoint's run is {engine}'s, and this model is a native "
                             f"{model.backend} model, which {engine} does not run.")
    want32 = state.fingerprint.get("precision") == "float32"
    if bool(getattr(model, "float32", False)) != want32 and hasattr(model, "with_options"):
        model = model.with_options(float32=want32)
    noncentered = frozenset(state.fingerprint.get("noncentered") or ())  # the loop's non-centring of the run
    if noncentered and hasattr(model, "with_options") and frozenset(model.noncentered) != noncentered:
        model = model.with_options(noncentered=noncentered)
    key = (engine, model)
    if key not in sampler.cache:  # through the registry: core imports no adapter
        sampler.cache[key] = get_adapter(engine).compile(model)
    return sampler.cache[key], model


def _seed(state: Any) -> int:
    """A new seed for an engine whose random state cannot be taken back: fixed by the run's seed and the
    draws done, so resuming the same checkpoint twice gives the same draws."""
    seed = state.random_state.get("seed")
    parts = [int(seed) if seed is not None else 0, *(int(n) for n in state.draws_done), 23]
    return int(np.random.SeedSequence(parts).generate_state(1)[0] % 2**31)


def resume_run(sampler: Any, options: Any, keep: Sequence[str] | None = None) -> Any:
    """Continue the run saved in ``options.resume`` with ``sampler``'s model; the whole run's DataTree
    (``options.draws`` draws per chain). See the module's docstring."""
    from resilient import record
    from resilient.checkpoint import (Checkpoint, latest_attempt, read_chains, read_meta, read_state,
                                      read_warmup_stats)
    from resilient.draws import RUNNING_COUNT, DrawBuffer, running_counts_on, to_datatree
    from resilient.loop import _layout, assess
    from resilient.policy import Attempt
    from resilient.quality import measure
    from resilient.sampler_state import cached_fingerprint, fingerprint_differences

    started = time.monotonic()
    root = Path(options.resume)
    folder = latest_attempt(root)
    meta = read_meta(root)
    state = read_state(root)
    engine = state.engine
    from resilient.engine import engine_for_language

    if sampler.engine not in ("auto", engine) and engine_for_language(
            sampler.engine, capabilities(engine).language) != engine:
        typed = capabilities(engine).nuts_of
        raise ResilientError(f"Resume refused: engine={sampler.engine!r}, but the run in {folder} ran on {engine!r}"
                             + (f" (engine={typed!r})" if typed else "") + "; a run resumes on the engine it ran on.")
    _refuse_other_settings(folder, meta, state, options)
    chains = int(options.chains)
    missing = sorted(set(range(chains)) - set(state.chains))
    if missing:
        raise ResilientError(
            f"Resume refused: the checkpoint {folder} has no sampler state for chain(s) {missing}: they had not "
            "finished warm-up when the run stopped (PyMC's NUTS and nutpie save a chain's state after warm-up). "
            "Start a new run instead.")
    compiled, model = _compiled_for(sampler, engine, state)
    differences = fingerprint_differences(state.fingerprint, cached_fingerprint(compiled))
    if differences:
        raise ResilientError(
            f"Resume refused: the run in {folder} sampled another model or other data: {'; '.join(differences)}. "
            "Resume with the model and data that run used, or start a new run.")

    wanted = int(options.draws)
    done = {chain: min(int(state.draws_done[state.chain_index(chain)]), wanted) for chain in range(chains)}
    remaining = {chain: wanted - done[chain] for chain in range(chains)}
    base = dict(state.settings)
    policy = options.policy
    readapt = state.adaptation == "re-adapt"
    if state.adaptation == "whole":  # the engine's whole state continues the run, warm-up included where it stopped
        tune, seed = continuation_tune(state, int(base.get("tune", meta.get("tune", 0)))), int(
            state.random_state.get("seed", 0))
    else:
        tune, seed = continuation_tune(state, int(meta.get("tune") or base.get("tune") or READAPT_TUNE)), _seed(state)
    deadline = started + policy.time_budget if policy.time_budget else None
    settings = NUTSSettings(
        draws=max(remaining.values()), tune=tune, chains=chains,
        target_accept=float(base.get("target_accept", options.target_accept)), random_seed=seed,
        max_tree_depth=int(base.get("max_tree_depth", options.max_tree_depth)),
        chunk_size=int(base.get("chunk_size", policy.chunk_size)), deadline=deadline, progressbar=False,
        resume_state=state, mass_matrix=str(base.get("mass_matrix", options.mass_matrix)), cores=options.cores)

    # the checkpoint's draws, up to where the state stands (a chunk written after the state is redone)
    buffer = DrawBuffer(chains)
    on_disk = read_chains(folder, with_draws=True)
    for chain in range(chains):
        values = on_disk.get(chain, {})
        rows = np.flatnonzero(values.get("draw", np.zeros(0, np.int64)) < done[chain]) if values else []
        if len(rows) != done[chain]:
            raise ResilientError(f"Resume refused: the checkpoint {folder} holds {len(rows)} draws of chain {chain} "
                                 f"where its sampler state counts {done[chain]} (a chunk file is missing or "
                                 "unreadable). Start a new run instead.")
        groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}, "sample_stats": {}}
        for key, array in values.items():
            if "__" in key:
                group, name = key.split("__", 1)
                groups[group][name] = array[rows][None]
        if done[chain]:
            buffer.add(Chunk((chain,), 0, False, groups["posterior"], groups["sample_stats"]))
    # the run's warm-up statistics, as the uninterrupted run's result has them (not a re-adaptation's)
    warmup = read_warmup_stats(folder, range(chains))
    for chain in range(chains) if warmup else ():
        buffer.add(Chunk((chain,), 0, True, {}, {name: values[chain:chain + 1] for name, values in warmup.items()}))

    store = None
    if not options.checkpoint or Path(options.checkpoint) == root:
        # the same folder: the resumed run's chunks join the attempt's; meta.json says the draws the run now has
        store = Checkpoint(root, {**meta, "draws": max(wanted, int(meta.get("draws") or 0))})
        store.continue_from(state)
    warmup_run = {chain: 0 for chain in range(chains)}
    counts_before = {chain: count for chain in range(chains)  # the engine's running count starts at 0 again
                     if (count := buffer.last_stat(chain, RUNNING_COUNT)) is not None}

    def on_chunk(chunk: Chunk) -> bool:
        if chunk.warmup:
            for chain in chunk.chains:
                warmup_run[chain] += chunk.size
            if store is not None and chunk.state is not None:  # an engine whose whole state continues warm-up
                store.write_state(chunk.state)
            return True
        chunk = replace(chunk, sample_stats=running_counts_on(chunk, counts_before))
        for row, chain in enumerate(chunk.chains):
            take = max(0, min(chunk.size, remaining[chain] - chunk.start))
            if take == 0:
                continue
            piece = Chunk((chain,), done[chain] + chunk.start, False,
                          {name: np.asarray(v)[row:row + 1, :take] for name, v in chunk.posterior.items()},
                          {name: np.asarray(v)[row:row + 1, :take] for name, v in chunk.sample_stats.items()},
                          _shifted(chunk.state, chain, done[chain], state, take, chunk.start))
            buffer.add(piece)
            if store is not None:
                store.write_chunk(piece)
        return True

    outcome = None
    if settings.draws > 0:
        with warnings.catch_warnings():
            # PyMC builds its adapting potential before the saved one replaces it: its notice that the dense
            # adaptation is experimental is about an adaptation that does not run here
            warnings.filterwarnings("ignore", message=r".* is an experimental feature", category=UserWarning)
            outcome = compiled.run_nuts(settings, on_chunk)

    posterior, stats = buffer.posterior(), buffer.sample_stats()
    data = to_datatree(posterior, stats, compiled.observed_data(), layout=_layout(compiled),
                       warmup_stats=buffer.warmup_stats())
    final = store.state if store is not None and store.state is not None else state
    data["sampler_state"] = final.to_dataset()

    length = buffer.complete_draws
    finished = length >= wanted
    quality = measure(posterior, stats, draws=length, chains=chains, max_tree_depth=settings.max_tree_depth)
    failure, message = assess(buffer, policy, replace(settings, draws=wanted)) if length >= 8 else (None, "")
    if state.adaptation == "whole":
        how = ("the whole sampler state (step size, mass matrix, adaptation, random key) was taken back"
               + (f"; its warm-up went on from iteration {int(state.tune_done.min())}"
                  if any(warmup_run.values()) else ": no warm-up ran again"))
    elif readapt:
        how = (f"{engine} cannot take its adaptation back, so it adapted again for {tune} iterations from the saved "
               "positions and step size")
    else:
        how = "the saved step size and mass matrix were set on the NUTS step, which sampled with tune=0"
    note = (f"resumed from {folder} after {min(done.values())}-{max(done.values())} draws per chain"
            if len(set(done.values())) > 1 else f"resumed from {folder} after {min(done.values())} draws per chain")
    note += f": {how}"
    if not finished:
        note += f"; it stopped again after {length} of {wanted} draws per chain ({getattr(outcome, 'reason', '')})"
    if failure is not None:
        note += f"; the draws fail a check: {message}"
    attempts = [a for a in _earlier_attempts(folder) if a.get("attempt") != state.attempt]
    number = state.attempt or 1
    attempt_settings = {"draws": wanted, "tune": int(meta.get("tune", base.get("tune", 0)) or 0), "chains": chains,
                        "target_accept": settings.target_accept, "float32": bool(getattr(model, "float32", False)),
                        "noncentered": sorted(getattr(model, "noncentered", ()) or ()),
                        "random_seed": meta.get("random_seed"),
                        "resumed": {"from": str(folder), "draws_done": [done[c] for c in range(chains)],
                                    "tune": tune, "warmup_iterations_run": [warmup_run[c] for c in range(chains)],
                                    "adaptation": "re-adapted" if readapt else "taken back",
                                    "random_seed": seed}}
    attempt_settings["mass_matrix"] = settings.mass_matrix
    attempts.append(Attempt(
        number, engine, attempt_settings, None, failure if finished else ("budget" if outcome and outcome.reason ==
                                                                         "deadline" else "interrupted"),
        note, "accepted" if finished and failure is None else ("gave-up" if finished else "interrupted"),
        time.monotonic() - started, length, int(np.sum(stats.get("diverging", 0))),
        warmup_seconds=getattr(outcome, "warmup_seconds", 0.0), sampling_seconds=getattr(outcome, "sampling_seconds", 0.0),
        rhat=quality.rhat, ess_bulk=quality.ess_bulk).to_dict())
    run_info = {"backend": engine, "model": model.name, "status": "ok" if finished and failure is None else (
                    "failed" if finished else "interrupted"),
                "message": note, "seconds": time.monotonic() - started, "random_seed": meta.get("random_seed"),
                "max_tree_depth": settings.max_tree_depth, "returned_attempt": number, "resumed_from": str(folder),
                "time_budget": policy.time_budget}
    if store is not None and store.error:
        run_info["checkpoint_error"] = store.error
    record.attach(data, attempts=attempts, run=run_info)
    if store is not None:
        store.write_record({}, {k: v for k, v in data.attrs.items() if k.startswith("resilient")})
    if failure is not None or not finished:
        warn(f"Resilient: the resumed run in {folder}: {note}.")
    wanted_ll = options.log_likelihood
    if wanted_ll if wanted_ll is not None else capabilities(sampler.backend).log_likelihood_by_default:
        from resilient.sampling import LOG_LIKELIHOOD_DEFAULT_LIMIT

        sampler._add_log_likelihood(data, limit=LOG_LIKELIHOOD_DEFAULT_LIMIT if wanted_ll is None else None)
    if keep is not None:
        data["posterior"] = data["posterior"].to_dataset()[list(keep)]
    return data


def _earlier_attempts(folder: Path) -> list[dict[str, Any]]:
    """The attempt log the checkpoint's run wrote when it ended (none where it was killed)."""
    import json

    path = folder / "record.json"
    if not path.exists():
        return []
    from resilient.record import ATTEMPTS_KEY

    text = json.loads(path.read_text()).get("attrs", {}).get(ATTEMPTS_KEY)
    return json.loads(text) if isinstance(text, str) else list(text or [])


def _shifted(new: Any, chain: int, done: int, saved: Any, take: int, start: int) -> Any:
    """The continuation's state for ``chain`` counted as the whole run's: draws after the checkpoint's."""
    from resilient.sampler_state import select

    if new is None or chain not in new.chains:
        return None
    one = select(new, [new.chain_index(chain)])
    return counted_on(replace(one, draws_done=np.asarray([start + take], np.int64)), saved, done)
