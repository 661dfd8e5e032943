"""The sampling loop's policy (caps, thresholds, remedies) and its attempt records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from resilient.errors import ResilientError
from resilient.states import REMEDIES, Failure, Outcome, Remedy

__all__ = ["Policy", "Attempt", "REMEDIES"]


@dataclass(frozen=True)
class Policy:
    """How hard the loop tries. ``time_budget`` is seconds for the whole call (None: no limit).

    ``rhat_limit`` is the loop's "far off" line: above it an attempt fails and the next remedy runs.
    ``rhat_goal`` is the published line (R-hat < 1.01: Vehtari et al. 2021, the line pm.sample warns at;
    None, the default: 1.01, or ``rhat_limit`` where that is lower): an attempt between the two is continued
    with more draws (the ``more_draws`` remedy: the same chains, no new warm-up) when that fits in the time
    left, and accepted otherwise.
    """

    max_attempts: int = 5
    time_budget: float | None = None
    max_divergence_rate: float = 0.005  # above it an attempt fails, even the last one
    # Under the rate, divergences still try the next fitting remedy when non-centring applies or the loop is
    # already remedying divergences, and one higher target_accept otherwise (the better attempt is returned); at
    # the cap (or with nothing left) a rate under the limit is accepted.
    retry_divergences: bool = True
    rhat_limit: float = 1.05
    rhat_goal: float | None = None
    min_ess_bulk_per_chain: float = 25.0
    tree_depth_saturation: float = 0.5  # fraction of draws at the maximum depth that counts as saturated
    target_accept_ladder: tuple[float, ...] = (0.9, 0.95, 0.99)
    remedies: tuple[Remedy, ...] = REMEDIES
    #: when the caps run out on a statistical failure (divergences, tree depth, R-hat/ESS): "warn" returns the
    #: best attempt's draws with a ResilientWarning (as pm.sample returns with warnings); "raise" raises
    #: SamplingFailed. A run with nothing usable (no draws, no initial point, a crash) always raises.
    on_exhausted: Literal["warn", "raise"] = "warn"
    init_retries: int = 20  # initial points tried per chain before giving up on a strategy
    chunk_size: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ResilientError(f"`max_attempts` must be a positive integer, got {self.max_attempts!r}.")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ResilientError(
                f"`time_budget` must be a positive number of seconds or None, got {self.time_budget!r}."
            )
        unknown = [r for r in self.remedies if r not in REMEDIES]
        if unknown:
            raise ResilientError(f"Unknown remedies {unknown}. Expected some of: {', '.join(REMEDIES)}.")
        if self.on_exhausted not in ("raise", "warn"):
            raise ResilientError(f"`on_exhausted` must be 'warn' or 'raise', got {self.on_exhausted!r}.")
        if self.rhat_goal is not None and not 1 < self.rhat_goal <= self.rhat_limit:
            raise ResilientError(f"`rhat_goal` must be over 1 and at most `rhat_limit` ({self.rhat_limit}), got "
                                 f"{self.rhat_goal!r}.")
        if not 0 < self.max_divergence_rate < 1:
            raise ResilientError(f"`max_divergence_rate` must be in (0, 1), got {self.max_divergence_rate!r}.")

    @property
    def goal(self) -> float:
        """The R-hat goal in effect: ``rhat_goal``, else 1.01 (or ``rhat_limit`` where that is lower)."""
        return self.rhat_goal if self.rhat_goal is not None else min(1.01, self.rhat_limit)

    def replace(self, **changes: Any) -> "Policy":
        values = asdict(self)
        values.update(changes)
        return Policy(**values)


@dataclass(frozen=True)
class Attempt:
    """One attempt: its settings, the remedy that led to it, what went wrong, how it ended."""

    attempt: int
    backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    remedy: Remedy | None = None
    failure: Failure | None = None
    message: str = ""
    outcome: Outcome = "accepted"
    seconds: float = 0.0
    draws: int = 0
    divergences: int = 0
    compile_seconds: float = 0.0
    warmup_seconds: float = 0.0
    sampling_seconds: float = 0.0
    rhat: float | None = None  #: the worst R-hat of the attempt's draws (None: fewer than 2 chains or 8 draws)
    ess_bulk: float | None = None  #: the smallest bulk ESS of the attempt's draws

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
