"""The named states that travel between the parts (and into report.json), as ``Literal`` types.

They stay plain strings on the wire (netCDF attributes, JSON), so readers in other tools need
nothing of ours; the types say which strings are legal and a checker holds the code to them.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["Verdict", "Severity", "Outcome", "Failure", "SamplerErrorKind", "Remedy", "RunStatus",
           "VERDICTS", "SEVERITIES", "OUTCOMES", "FAILURES", "SAMPLER_ERROR_KINDS", "REMEDIES", "RUN_STATUSES"]

#: a diagnostic check's or a whole run's verdict, from best to worst.
Verdict = Literal["ok", "warn", "fail"]
#: a preflight finding, from most to least serious ("fixed": found and removed by a rewrite).
Severity = Literal["error", "fixed", "warning", "info"]
#: how an attempt ended.
Outcome = Literal["accepted", "retry", "gave-up", "budget", "interrupted"]
#: what went wrong in an attempt (None in an Attempt: nothing).
Failure = Literal["initialization", "no-draws", "non-finite", "stuck", "divergences", "tree-depth",
                  "convergence", "multimodal", "minor-mode", "sampler-error", "budget", "interrupted"]
#: whether a remedy can help a backend error: see :class:`resilient.errors.SamplerError`.
SamplerErrorKind = Literal["numerical", "resources", "crash"]
#: every remedy the loop knows, in the order it tries them for a failure they fit.
Remedy = Literal["reinitialize", "noncenter", "more_draws", "longer_warmup", "dense_mass", "low_rank", "target_accept",
                 "float64", "other_backend"]
#: how a call ended, in the result's run record.
RunStatus = Literal["ok", "failed", "budget", "interrupted"]

VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
FAILURES: tuple[Failure, ...] = get_args(Failure)
SAMPLER_ERROR_KINDS: tuple[SamplerErrorKind, ...] = get_args(SamplerErrorKind)
REMEDIES: tuple[Remedy, ...] = get_args(Remedy)
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
