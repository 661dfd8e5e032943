"""One call's plan: what the user passed, resolved once before anything samples.

A call goes one way: :func:`resilient.sample` checks its arguments into a
:class:`~resilient.options.RunOptions` and an :class:`~resilient.arguments.IdataOptions`;
:meth:`resilient.sampling.CompiledSampler.plan` resolves them, with the compiled model, into a :class:`Plan`
(the model in its precision, the engine and why, the NUTS settings, the warm start, the checkpoint, what the
result keeps); :mod:`resilient.loop` runs the plan; the result is then shaped as the plan says. No stage goes
back to an earlier one for a decision: each decision is a field here, and the run record repeats the ones a
reader needs (the engine's and the precision's reasons).

Dependency rule: the standard library only at import time (the fields' types are other modules' records).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Plan"]


@dataclass(frozen=True)
class Plan:
    """What one run will do, decided before it starts."""

    #: the model that samples (the sampler's, or its float32/float64 form chosen by ``float32="auto"``)
    model: Any
    #: the engine that runs NUTS and why (``engine="auto"``'s estimate, or what the user named)
    engine: str
    engine_reason: str
    #: why this precision (``float32="auto"`` or a native NumPyro function's raw precision), or None
    precision_reason: str | None
    #: the first attempt's NUTS settings (:class:`~resilient.backend.NUTSSettings`), warm start included
    settings: Any
    #: the loop's caps, thresholds and remedies (:class:`~resilient.policy.Policy`)
    policy: Any
    preflight: bool
    progressbar: bool
    #: keep the warm-up draws (pm.sample's ``discard_tuned_samples=False``)
    keep_warmup: bool
    #: where chunks are written (:class:`~resilient.checkpoint.Checkpoint`), or None
    checkpoint: Any
    #: the saved adaptation the first attempt starts from (:class:`~resilient.warm_start.WarmStart`), or None,
    #: and why a warm start that was asked for is not used (None where nothing was asked)
    warm: Any
    warm_note: str | None
    #: shaping the result: the posterior variables kept (``var_names``), pm.sample's ``idata_kwargs``, the
    #: ``pm.Model`` they are computed with, the ``log_likelihood`` group (None: the backend's habit), and
    #: pm.sample's convergence warnings
    keep: list[str] | None
    idata: Any
    pymc_model: Any
    log_likelihood: bool | None
    convergence_checks: bool

    def describe(self) -> str:
        """The plan in one line, as a user would check it before a long run."""
        settings = self.settings
        warm_up = (f"a {self.warm.window}-iteration warm-start window, {settings.tune} if its check fails"
                   if self.warm is not None else f"{settings.tune} warm-up")
        parts = [f"{settings.chains} chains x ({warm_up} + {settings.draws} draws)",
                 f"on {self.engine}: {self.engine_reason}"]
        if self.precision_reason:
            parts.append(f"precision: {self.precision_reason}")
        if self.warm is not None:
            parts.append(f"warm start from {self.warm.source}")
        elif self.warm_note:
            parts.append(f"warm start {self.warm_note}")
        if self.checkpoint is not None:
            parts.append(f"checkpoint in {self.checkpoint.root}")
        return "; ".join(parts)
