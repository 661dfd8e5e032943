"""Convergence diagnostics with stated thresholds, a verdict and a suggested fix for each.

:func:`diagnose` wraps ArviZ 1.x and turns its numbers into :class:`Check` records; it computes
none of the statistics itself:

- ``arviz_stats.summary`` per scalar quantity: ``r_hat`` (the rank-normalised split R-hat of
  Vehtari et al. 2021), ``ess_bulk``/``ess_tail`` and ``mcse_mean`` (``arviz_stats.ess``/``mcse``).
- ``arviz_stats.diagnose`` (CmdStan's ``diagnose``) for the sampler statistics: the divergence
  count, the count of ``reached_max_treedepth`` transitions, E-BFMI per chain (``arviz_stats.bfmi``)
  and the chains below ``bfmi_min``.

What stays ours, and why: ``arviz_stats.diagnose`` returns a pass/fail flag and, for R-hat and
ESS, only the names of whole variables past one threshold; a check here needs a verdict
(ok/warn/fail), the worst value, the scalar quantities (``theta[2]``) and a fail threshold, so
R-hat/ESS/MCSE are judged from the summary. It has no per-chain counts, no fail rates, and reads
tree depth only from PyMC's ``reached_max_treedepth``; NumPyro's and Resilient's ``tree_depth`` is
compared with the cap here. Non-finite draws are counted here (ArviZ just returns NaN).

Checks, in order. Each has a published threshold (``warn`` when crossed) and, where a
worse value makes the draws unusable, a ``fail`` threshold (the defaults match the limits
at which :class:`resilient.policy.Policy` retries):

- ``finite_draws``: fails on any NaN or infinite posterior draw.
- ``rhat``: warns when max R-hat > ``rhat_max`` (1.01); fails above ``rhat_fail`` (1.05).
- ``ess_bulk`` / ``ess_tail``: warn when min ESS < ``ess_min_per_chain`` x chains (100 per
  chain); fail below ``ess_fail_per_chain`` x chains (25 per chain).
- ``mcse``: warns when the MCSE of the mean > ``mcse_max_ratio`` (0.1) x posterior sd.
- ``bfmi``: warns when E-BFMI < ``bfmi_min`` (0.3) in any chain.
- ``divergences``: warns when divergent transitions > ``max_divergences`` (0); fails when
  their rate > ``divergence_fail_rate`` (0.005).
- ``tree_depth``: warns when any transition reaches ``max_tree_depth``; fails when the rate
  > ``tree_depth_fail_rate`` (0.5).

Sources: R-hat and ESS, Vehtari et al. (2021); E-BFMI, Betancourt (2016); divergences and
tree depth, Stan's ``diagnose``.

A check that cannot be computed (a plain PyMC/NumPyro DataTree without the statistic,
one chain for R-hat) has verdict ``"n/a"`` or ``"warn"`` and says why; ``"n/a"`` counts as
``"ok"`` for the overall verdict, which is the worst of the checks.

Depends on numpy at import time; ArviZ is imported inside :func:`diagnose`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np

from resilient import record
from resilient.states import Verdict

__all__ = ["Check", "Diagnostics", "diagnose", "VERDICTS", "CheckVerdict", "DEFAULT_MAX_TREE_DEPTH"]

#: a check's verdict: a run's :data:`~resilient.states.Verdict`, or "n/a" (could not be computed).
CheckVerdict = Verdict | Literal["n/a"]

#: verdicts from least to most serious; "n/a" (not computed) ranks with "ok".
VERDICTS: tuple[CheckVerdict, ...] = ("ok", "n/a", "warn", "fail")
_RANK: dict[CheckVerdict, int] = {"ok": 0, "n/a": 0, "warn": 1, "fail": 2}

#: what NumPyro and PyMC use when nobody says otherwise.
DEFAULT_MAX_TREE_DEPTH = 10

#: how many variable names a one-line explanation lists before "and N more".
_NAMES_IN_TEXT = 5


@dataclass(frozen=True)
class Check:
    """One diagnostic: its verdict, the number behind it, the rule, and what to do."""

    name: str
    verdict: CheckVerdict
    value: float | int | None  # the worst value seen (max R-hat, min ESS, divergence count ...)
    threshold: float | int | None  # the published limit: crossing it is a "warn"
    rule: str  # the rule in words, e.g. "max R-hat <= 1.01 (fail above 1.05)"
    variables: tuple[str, ...] = ()  # scalar quantities that break the rule, as in the summary index
    explanation: str = ""  # one line: what was seen and what it means
    action: str = ""  # the suggested fix ("" when nothing needs doing)
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON-ready extras (per-chain values ...)
    fail_threshold: float | int | None = None  # crossing it is a "fail" (None: the check only warns)

    @property
    def passed(self) -> bool:
        return self.verdict in ("ok", "n/a")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "value": _json_number(self.value),
            "threshold": _json_number(self.threshold),
            "fail_threshold": _json_number(self.fail_threshold),
            "rule": self.rule,
            "variables": list(self.variables),
            "explanation": self.explanation,
            "action": self.action,
            "details": _json_ready(dict(self.details)),
        }


@dataclass(frozen=True)
class Diagnostics:
    """Every check, the overall verdict and ArviZ's summary table for one DataTree."""

    checks: tuple[Check, ...]
    verdict: Verdict  # the worst check's ("n/a" counts as "ok")
    summary: Any = field(compare=False, repr=False)  # pandas.DataFrame from arviz_stats.summary
    chains: int = 0
    draws: int = 0  # per chain
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    ci_kind: str = "eti"
    ci_prob: float = 0.89

    @property
    def passed(self) -> bool:
        """True unless a check failed (warnings pass)."""
        return self.verdict != "fail"

    def check(self, name: str) -> Check:
        for item in self.checks:
            if item.name == name:
                return item
        names = ", ".join(repr(c.name) for c in self.checks)
        raise KeyError(f"`name` must be one of {names}, got {name!r}.")

    def failed(self) -> tuple[Check, ...]:
        """Checks whose verdict is "warn" or "fail", most serious first."""
        bad = [c for c in self.checks if not c.passed]
        return tuple(sorted(bad, key=lambda c: -_RANK[c.verdict]))

    def summary_rows(self) -> list[dict[str, Any]]:
        """The summary table as rows with stable keys (``ci_lower``/``ci_upper`` whatever the CI kind)."""
        return _summary_rows(self.summary)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "chains": self.chains,
            "draws": self.draws,
            "thresholds": _json_ready(dict(self.thresholds)),
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
            "ci_kind": self.ci_kind,
            "ci_prob": self.ci_prob,
            "summary": self.summary_rows(),
        }

    def table(self) -> Any:
        """The checks as a rich Table (verdict, value, rule, explanation, action)."""
        from rich.table import Table

        colours: dict[CheckVerdict, str] = {"ok": "green", "n/a": "dim", "warn": "yellow", "fail": "bold red"}
        table = Table(title=f"Diagnostics: {self.verdict.upper()} ({self.chains} chains x {self.draws} draws)")
        for column in ("check", "verdict", "value", "rule", "what it means", "suggested action"):
            table.add_column(column, overflow="fold")
        for c in self.checks:
            value = "" if c.value is None else f"{c.value:.4g}" if isinstance(c.value, float) else str(c.value)
            table.add_row(c.name, f"[{colours[c.verdict]}]{c.verdict}[/]", value, c.rule, c.explanation,
                          c.action if not c.passed else "")
        return table

    def summary_table(self, max_rows: int = 40) -> Any:
        """ArviZ's summary as a rich Table (at most ``max_rows`` rows, the least converged first if cut)."""
        from rich.table import Table

        rows = self.summary_rows()
        shown = rows
        if len(rows) > max_rows:
            shown = sorted(rows, key=lambda r: -(r["r_hat"] or 0.0))[:max_rows]
        ci = f"{self.ci_kind} {100 * self.ci_prob:g}%"
        table = Table(title="Posterior summary" + (f" ({max_rows} of {len(rows)}, highest R-hat)"
                                                   if len(rows) > max_rows else ""))
        columns = ("variable", "mean", "sd", f"{ci} lower", f"{ci} upper", "ess_bulk", "ess_tail", "r_hat")
        for column in columns:
            table.add_column(column, justify="left" if column == "variable" else "right")
        keys = ("mean", "sd", "ci_lower", "ci_upper", "ess_bulk", "ess_tail", "r_hat")
        for row in shown:
            cells = []
            for key in keys:
                value = row[key]
                if value is None:
                    cells.append("-")
                elif key.startswith("ess"):
                    cells.append(f"{value:.0f}")
                elif key == "r_hat":
                    bad = value > self.thresholds.get("rhat_max", math.inf)
                    cells.append(f"[red]{value:.3f}[/]" if bad else f"{value:.3f}")
                else:
                    cells.append(f"{value:.4g}")
            table.add_row(row["variable"], *cells)
        return table

    def _repr_html_(self) -> str:
        """Jupyter's display: the verdict and the checks as an HTML table (:mod:`resilient.notebook`)."""
        from resilient.notebook import diagnostics_html

        return diagnostics_html(self)

    def __str__(self) -> str:
        lines = [f"Verdict: {self.verdict.upper()} ({self.chains} chains x {self.draws} draws)"]
        for c in self.checks:
            lines.append(f"  [{c.verdict:>4}] {c.name}: {c.explanation}")
            if c.action and not c.passed:
                lines.append(f"         -> {c.action}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# diagnose


def diagnose(
    data: Any,
    *,
    rhat_max: float = 1.01,
    ess_min_per_chain: float = 100,
    mcse_max_ratio: float = 0.1,
    bfmi_min: float = 0.3,
    max_divergences: int = 0,
    max_tree_depth: int | None = None,
    rhat_fail: float = 1.05,
    ess_fail_per_chain: float = 25,
    divergence_fail_rate: float = 0.005,
    tree_depth_fail_rate: float = 0.5,
    var_names: list[str] | str | None = None,
    ci_kind: str | None = None,
    ci_prob: float | None = None,
) -> Diagnostics:
    """Check a posterior sample against published thresholds.

    Each check (R-hat, bulk and tail ESS, MCSE, E-BFMI, divergences, tree depth, non-finite
    draws) gets a verdict: ``ok``; ``warn`` past its published threshold; ``fail`` past the
    loop's retry limit (the ``*_fail`` thresholds). The overall verdict is the worst check.

    Parameters
    ----------
    data : DataTree
        From :func:`resilient.sample`, PyMC or NumPyro, or anything
        ``arviz_base.convert_to_datatree`` takes. It needs a ``posterior`` group, and uses
        ``sample_stats`` (``diverging``, ``tree_depth`` or ``reached_max_treedepth``, ``energy``)
        where present.
    rhat_max, ess_min_per_chain, mcse_max_ratio, bfmi_min, max_divergences : float
        Warning thresholds: R-hat, bulk/tail ESS per chain, MCSE / posterior sd, E-BFMI, and the
        number of divergent draws allowed.
    max_tree_depth : int, optional
        The sampler's cap; defaults to the one recorded in the data's attempt log or attributes,
        else 10.
    rhat_fail, ess_fail_per_chain, divergence_fail_rate, tree_depth_fail_rate : float
        Fail thresholds (the loop's retry limits). One milder than its warning threshold is moved
        up to it.
    var_names : str or list of str, optional
        Limit R-hat, ESS and MCSE to these variables.
    ci_kind, ci_prob : optional
        Passed to ``arviz_stats.summary`` (ArviZ's defaults: ``"eti"``, 0.89).

    Returns
    -------
    Diagnostics
        ``.verdict``, ``.checks`` (each a :class:`Check` with value, threshold, explanation and
        action), ``.summary`` (ArviZ's table) and ``.notes``.
    """
    from arviz_base import convert_to_datatree, rcParams
    from arviz_stats import summary as arviz_summary

    _require_positive("rhat_max", rhat_max)
    _require_positive("ess_min_per_chain", ess_min_per_chain, allow_zero=True)
    _require_positive("mcse_max_ratio", mcse_max_ratio)
    _require_positive("bfmi_min", bfmi_min, allow_zero=True)
    _require_positive("rhat_fail", rhat_fail)
    _require_positive("ess_fail_per_chain", ess_fail_per_chain, allow_zero=True)
    _require_fraction("divergence_fail_rate", divergence_fail_rate)
    _require_fraction("tree_depth_fail_rate", tree_depth_fail_rate)
    rhat_fail = max(rhat_fail, rhat_max)
    ess_fail_per_chain = min(ess_fail_per_chain, ess_min_per_chain)
    if int(max_divergences) != max_divergences or max_divergences < 0:
        raise ValueError(f"`max_divergences` must be a non-negative integer, got {max_divergences!r}.")
    if max_tree_depth is not None and (int(max_tree_depth) != max_tree_depth or max_tree_depth < 1):
        raise ValueError(f"`max_tree_depth` must be a positive integer or None, got {max_tree_depth!r}.")

    tree = data if _is_datatree(data) else convert_to_datatree(data)
    if "posterior" not in tree.children:
        groups = ", ".join(repr(g) for g in tree.children) or "none"
        raise ValueError(
            f"`data` must have a 'posterior' group, got groups {groups}. "
            "Pass the DataTree returned by resilient.sample, pm.sample or arviz_base.from_numpyro."
        )
    posterior = tree["posterior"].to_dataset()
    if var_names is not None:
        names = [var_names] if isinstance(var_names, str) else list(var_names)
        missing = [n for n in names if n not in posterior.data_vars]
        if missing:
            raise ValueError(
                f"`var_names` must name posterior variables ({', '.join(map(str, posterior.data_vars))}), "
                f"got unknown {', '.join(map(repr, missing))}."
            )
        posterior = posterior[names]
    stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else None

    chains = int(posterior.sizes.get("chain", 1))
    draws = int(posterior.sizes.get("draw", 0))
    ci_kind = ci_kind or rcParams["stats.ci_kind"]
    ci_prob = float(ci_prob or rcParams["stats.ci_prob"])
    thresholds = {
        "rhat_max": rhat_max, "ess_min_per_chain": ess_min_per_chain,
        "ess_min_total": ess_min_per_chain * chains, "mcse_max_ratio": mcse_max_ratio,
        "bfmi_min": bfmi_min, "max_divergences": int(max_divergences), "rhat_fail": rhat_fail,
        "ess_fail_per_chain": ess_fail_per_chain, "ess_fail_total": ess_fail_per_chain * chains,
        "divergence_fail_rate": divergence_fail_rate, "tree_depth_fail_rate": tree_depth_fail_rate,
    }
    notes: list[str] = []

    # ArviZ returns NaN (with numpy's RuntimeWarnings) for constant or too-short chains;
    # the checks below turn those NaNs into verdicts, so the warnings carry nothing more.
    summary = None
    if draws > 0 and len(posterior.data_vars):
        try:
            with _quiet_numpy():
                summary = arviz_summary(posterior, round_to="none", ci_kind=ci_kind, ci_prob=ci_prob)
        except Exception as error:  # noqa: BLE001 - a summary failure must not hide the checks
            notes.append(f"arviz_stats.summary failed ({type(error).__name__}: {error}); table omitted.")
    if summary is None:
        summary = _empty_summary()

    elements = _element_facts(posterior) if draws > 0 else {}
    checks: list[Check] = [_check_finite(elements, draws)]
    checks.append(_check_rhat(summary, elements, rhat_max, rhat_fail, chains, draws))
    checks.append(_check_ess(summary, elements, "ess_bulk", ess_min_per_chain, ess_fail_per_chain,
                             chains, draws))
    checks.append(_check_ess(summary, elements, "ess_tail", ess_min_per_chain, ess_fail_per_chain,
                             chains, draws))
    checks.append(_check_mcse(summary, elements, mcse_max_ratio, draws))
    sampler = _arviz_sampler_stats(stats, bfmi_min)
    checks.append(_check_bfmi(stats, sampler, bfmi_min))
    checks.append(_check_divergences(stats, sampler, int(max_divergences), divergence_fail_rate))
    depth, depth_source = _max_tree_depth(tree, stats, max_tree_depth)
    thresholds["max_tree_depth"] = depth
    checks.append(_check_tree_depth(stats, sampler, depth, depth_source, tree_depth_fail_rate))

    by_name = {c.name: c for c in checks}
    if by_name["rhat"].verdict == "fail" and by_name["tree_depth"].verdict in ("warn", "fail"):
        notes.append(
            "R-hat is high and trajectories saturate the maximum tree depth: chains are drifting, "
            "so the posterior looks improper or unidentified. Give every parameter a proper prior "
            "(no Flat/HalfFlat without informative data) and check for non-identified sums or products."
        )
    if draws == 0:
        notes.append("The data hold no finished draws: nothing can be diagnosed.")
    if "warmup_sample_stats" in tree.children and "diverging" in tree["warmup_sample_stats"].data_vars:
        warm = int(np.asarray(tree["warmup_sample_stats"]["diverging"].values).sum())
        if warm:
            notes.append(f"{warm} divergent transitions during warm-up (not counted; normal while step size adapts).")

    worst = max((c.verdict for c in checks), key=lambda v: _RANK[v])
    verdict: Verdict = "ok" if worst == "n/a" else worst
    return Diagnostics(
        checks=tuple(checks), verdict=verdict, summary=summary, chains=chains, draws=draws,
        thresholds=thresholds, notes=tuple(notes), ci_kind=ci_kind, ci_prob=ci_prob,
    )


# ----------------------------------------------------------------------------------------------
# the checks (pure functions of ArviZ's numbers)


def _check_finite(elements: Mapping[str, dict[str, Any]], draws: int) -> Check:
    rule = "every posterior draw is finite"
    if draws == 0:
        return Check("finite_draws", "fail", 0, 0, rule, (), "No draws finished, so there is nothing to check.",
                     "Run longer (a larger time_budget) or resume from the checkpoint folder.")
    bad = tuple(name for name, facts in elements.items() if facts["nonfinite"] > 0)
    count = int(sum(elements[name]["nonfinite"] for name in bad))
    if not bad:
        return Check("finite_draws", "ok", 0, 0, rule, (), "All draws are finite.")
    return Check(
        "finite_draws", "fail", count, 0, rule, bad,
        f"{count} NaN or infinite draws in {_names(bad)}; statistics of these quantities are undefined.",
        "Find where the model produces NaN (run resilient.preflight on it); check parameter constraints "
        "and use log-space formulas (log1p, logsumexp) for extreme values.",
        {"nonfinite_by_variable": {name: elements[name]["nonfinite"] for name in bad}},
    )


def _check_rhat(summary: Any, elements: Mapping[str, dict[str, Any]], rhat_max: float, rhat_fail: float,
                chains: int, draws: int) -> Check:
    rule = f"max R-hat <= {rhat_max:g} (fail above {rhat_fail:g})"
    action_mixing = ("Run longer (more tune and draws); if chains stay apart, reparameterise or add prior "
                     "information (a multimodal or poorly identified posterior).")

    def check(verdict: CheckVerdict, value: Any, variables: tuple[str, ...], explanation: str, action: str,
              details: Mapping[str, Any]) -> Check:
        return Check("rhat", verdict, value, rhat_max, rule, variables, explanation, action, details, rhat_fail)

    if chains < 2:
        return check("warn", None, (), f"R-hat needs at least 2 chains, got {chains}: mixing between chains "
                     "cannot be checked.", "Run at least 4 chains (chains=4).", {"chains": chains})
    if draws < 4:
        return check("fail", None, (), f"Only {draws} draws per chain; R-hat needs at least 4.",
                     "Draw more samples (e.g. draws=1000).", {"draws": draws})
    values = _column(summary, "r_hat")
    high = tuple(n for n, v in values.items() if math.isfinite(v) and v > rhat_max)
    severe = tuple(n for n in high if values[n] > rhat_fail)
    constant = tuple(n for n, v in values.items() if not math.isfinite(v) and elements.get(n, {}).get("constant"))
    undefined = tuple(n for n, v in values.items() if not math.isfinite(v) and n not in constant)
    finite = [v for v in values.values() if math.isfinite(v)]
    worst = max(finite) if finite else None
    details = {"max_by_variable": {n: values[n] for n in high}, "above_fail": list(severe),
               "constant": list(constant), "undefined": list(undefined)}
    if high or undefined:
        parts = []
        if high:
            parts.append(f"R-hat above {rhat_max:g} for {_names(high)} (max {worst:.3f}): chains disagree, "
                         "so the draws may not represent one posterior")
        if undefined:
            parts.append(f"R-hat undefined for {_names(undefined)} (non-finite draws)")
        verdict = "fail" if severe or undefined else "warn"
        return check(verdict, worst, high + undefined, "; ".join(parts) + ".", action_mixing, details)
    if constant:
        return check("warn", worst, constant,
                     f"Constant across all draws, so R-hat is undefined: {_names(constant)}. Fine for a fixed "
                     "quantity, otherwise the sampler is stuck.",
                     "If the quantity should vary, check its initial values and step size (a stuck chain).",
                     details)
    if worst is None:
        return check("n/a", None, (), "No quantities to check.", "", details)
    return check("ok", worst, (), f"Max R-hat {worst:.3f} (chains agree).", "", details)


def _check_ess(summary: Any, elements: Mapping[str, dict[str, Any]], column: str, per_chain: float,
               fail_per_chain: float, chains: int, draws: int) -> Check:
    kind = "bulk" if column == "ess_bulk" else "tail"
    minimum, fail_minimum = per_chain * chains, fail_per_chain * chains
    rule = f"min {kind} ESS >= {minimum:g} ({per_chain:g} per chain; fail below {fail_minimum:g})"
    what = "means and medians" if kind == "bulk" else "intervals and tail quantiles"

    def check(verdict: CheckVerdict, value: Any, variables: tuple[str, ...], explanation: str, action: str,
              details: Mapping[str, Any]) -> Check:
        return Check(column, verdict, value, minimum, rule, variables, explanation, action, details, fail_minimum)

    if draws < 4:
        return check("fail", None, (), f"Only {draws} draws per chain; {kind} ESS needs at least 4.",
                     "Draw more samples (e.g. draws=1000).", {"draws": draws})
    values = _column(summary, column)
    low = tuple(n for n, v in values.items() if math.isfinite(v) and v < minimum)
    severe = tuple(n for n in low if values[n] < fail_minimum)
    undefined = tuple(n for n, v in values.items() if not math.isfinite(v))
    finite = [v for v in values.values() if math.isfinite(v)]
    worst = min(finite) if finite else None
    details = {"min_by_variable": {n: values[n] for n in low}, "below_fail": list(severe),
               "undefined": list(undefined)}
    if worst is None and not undefined:
        return check("n/a", None, (), "No quantities to check.", "", details)
    if low or undefined:
        parts = []
        if low:
            parts.append(f"{kind.capitalize()} ESS below {minimum:g} for {_names(low)} (min {worst:.0f}): "
                         f"{what} are estimated imprecisely")
        if undefined:
            parts.append(f"{kind} ESS undefined for {_names(undefined)} (non-finite draws)")
        action = ("Draw more samples; if ESS per draw stays low, reparameterise (non-centre hierarchical "
                  "parameters) or raise target_accept.")
        verdict = "fail" if severe or undefined else "warn"
        return check(verdict, worst, low + undefined, "; ".join(parts) + ".", action, details)
    return check("ok", worst, (), f"Min {kind} ESS {worst:.0f}.", "", details)


def _check_mcse(summary: Any, elements: Mapping[str, dict[str, Any]], max_ratio: float, draws: int) -> Check:
    rule = f"MCSE of the mean <= {max_ratio:g} x posterior sd"
    if draws < 4:
        return Check("mcse", "fail", None, max_ratio, rule, (),
                     f"Only {draws} draws per chain; MCSE needs at least 4.",
                     "Draw more samples (e.g. draws=1000).", {"draws": draws})
    mcse = _column(summary, "mcse_mean")
    sd = _column(summary, "sd")
    ratios = {}
    for name, value in mcse.items():
        spread = sd.get(name, math.nan)
        if math.isfinite(value) and math.isfinite(spread) and spread > 0:
            ratios[name] = value / spread
    if not ratios:
        return Check("mcse", "n/a", None, max_ratio, rule, (),
                     "MCSE could not be compared with the posterior sd (constant or non-finite draws).", "")
    high = tuple(n for n, r in ratios.items() if r > max_ratio)
    worst = max(ratios.values())
    details = {"ratio_by_variable": {n: ratios[n] for n in high}}
    if high:
        return Check("mcse", "warn", worst, max_ratio, rule, high,
                     f"Monte Carlo error of the mean exceeds {max_ratio:g} posterior sd for {_names(high)} "
                     f"(max {worst:.3f} sd).",
                     "Draw more samples (MCSE shrinks as 1/sqrt(ESS)).", details)
    return Check("mcse", "ok", worst, max_ratio, rule, (),
                 f"Monte Carlo error of the mean is at most {worst:.3f} posterior sd.", "", details)


def _check_bfmi(stats: Any, sampler: Mapping[str, Any], bfmi_min: float) -> Check:
    rule = f"E-BFMI >= {bfmi_min:g} in every chain"
    if stats is None or "energy" not in stats.data_vars:
        return Check("bfmi", "n/a", None, bfmi_min, rule, (),
                     "Skipped: sample_stats has no `energy`.", "")
    if stats.sizes.get("draw", 0) < 2:
        return Check("bfmi", "n/a", None, bfmi_min, rule, (), "Skipped: E-BFMI needs at least 2 draws.", "")
    if "bfmi" not in sampler:
        return Check("bfmi", "n/a", None, bfmi_min, rule, (), _arviz_failed(sampler), "")
    per_chain = [float(v) for v in np.atleast_1d(np.asarray(sampler["bfmi"]["bfmi_values"], dtype=float))]
    finite = [v for v in per_chain if math.isfinite(v)]
    if not finite:
        return Check("bfmi", "n/a", None, bfmi_min, rule, (),
                     "E-BFMI is undefined (energy is constant or non-finite).", "", {"per_chain": per_chain})
    low_chains = [int(i) for i in sampler["bfmi"]["failed_chains"]]  # positions: see _arviz_sampler_stats
    worst = min(finite)
    details = {"per_chain": per_chain, "chains_below": low_chains}
    if low_chains:
        return Check(
            "bfmi", "warn", worst, bfmi_min, rule, (),
            f"E-BFMI below {bfmi_min:g} in {len(low_chains)} of {len(per_chain)} chains (min {worst:.3f}): "
            "momentum resampling explores the energy distribution poorly (heavy tails or a funnel).",
            "Reparameterise (non-centre hierarchical scales, standardise predictors); if that is not possible, "
            "run longer warm-up.", details)
    return Check("bfmi", "ok", worst, bfmi_min, rule, (), f"Min E-BFMI {worst:.3f}.", "", details)


def _check_divergences(stats: Any, sampler: Mapping[str, Any], max_divergences: int, fail_rate: float) -> Check:
    rule = f"divergent transitions <= {max_divergences} (fail above {100 * fail_rate:g}% of transitions)"

    def check(verdict: CheckVerdict, value: Any, explanation: str, action: str = "", details: Any = None) -> Check:
        return Check("divergences", verdict, value, max_divergences, rule, (), explanation, action,
                     details or {}, fail_rate)

    if stats is None or "diverging" not in stats.data_vars:
        return check("n/a", None, "Skipped: sample_stats has no `diverging`.")
    if "divergent" not in sampler:
        return check("n/a", None, _arviz_failed(sampler))
    count, total = int(sampler["divergent"]["n_divergent"]), int(sampler["divergent"]["total_samples"])
    rate = count / max(total, 1)
    details = {"per_chain": _per_chain(stats["diverging"]), "rate": rate, "transitions": total}
    if count > max_divergences:
        verdict = "fail" if rate > fail_rate else "warn"
        return check(
            verdict, count,
            f"{count} of {total} transitions ({100 * rate:.2f}%) diverged: the sampler cannot follow the "
            "posterior's curvature somewhere, so the draws may be biased there.",
            "Increase target_accept closer to 1 (e.g. 0.95); if divergences remain, reparameterise "
            "(non-centre hierarchical parameters).", details)
    if count:
        return check("ok", count, f"{count} divergent transitions, within the allowed {max_divergences}.",
                     "", details)
    return check("ok", 0, "No divergent transitions.", "", details)


def _check_tree_depth(stats: Any, sampler: Mapping[str, Any], depth: int, source: str, fail_rate: float) -> Check:
    rule = f"no transition reaches max_tree_depth = {depth} (fail above {100 * fail_rate:g}% of transitions)"

    def check(verdict: CheckVerdict, value: Any, explanation: str, action: str = "", details: Any = None) -> Check:
        return Check("tree_depth", verdict, value, depth, rule, (), explanation, action, details or {}, fail_rate)

    if stats is None:
        return check("n/a", None, "Skipped: no sample_stats group.")
    if "reached_max_treedepth" in stats.data_vars:  # PyMC's flag: ArviZ counts it
        if "treedepth" not in sampler:
            return check("n/a", None, _arviz_failed(sampler))
        saturated = stats["reached_max_treedepth"]
        count, total = int(sampler["treedepth"]["n_max"]), int(sampler["treedepth"]["total_samples"])
        source = "reached_max_treedepth"
    elif "tree_depth" in stats.data_vars:  # NumPyro's and Resilient's depth: ArviZ does not read it
        saturated = stats["tree_depth"] >= depth
        count, total = int(saturated.values.sum()), int(saturated.size)
    else:
        return check("n/a", None, "Skipped: sample_stats has neither `tree_depth` nor `reached_max_treedepth`.")
    rate = count / max(total, 1)
    details = {"per_chain": _per_chain(saturated), "rate": rate, "transitions": total, "max_tree_depth": depth,
               "max_tree_depth_source": source}
    if count:
        return check(
            "fail" if rate > fail_rate else "warn", count,
            f"{count} of {total} transitions ({100 * rate:.2f}%) hit the maximum tree depth {depth}: "
            "trajectories were cut short, so exploration is slow.",
            "Reparameterise to reduce posterior correlations or scale differences; raise max_tree_depth only "
            "if the posterior is known to be proper and well behaved.", details)
    return check("ok", 0, f"No transition reached tree depth {depth}.", "", details)


# ----------------------------------------------------------------------------------------------
# helpers

#: the sampler statistics arviz_stats.diagnose reads.
_ARVIZ_STATS = ("diverging", "reached_max_treedepth", "energy")


def _arviz_sampler_stats(stats: Any, bfmi_min: float) -> dict[str, Any]:
    """``arviz_stats.diagnose``'s results for the sampler statistics: "divergent", "treedepth", "bfmi".

    It runs on the statistics it reads, alone and passed as its ``group``, so its own R-hat/ESS
    pass covers one statistic rather than the whole posterior again (ours come per scalar quantity
    from the summary). They go as floats (its ESS cannot subtract booleans) with chain and draw
    coordinates 0, 1, ... (it indexes the chain coordinate, so failed chains come back as
    positions). Returns ``{"error": message}`` if it raises, ``{}`` without the statistics.
    """
    names = [n for n in _ARVIZ_STATS if stats is not None and n in stats.data_vars]
    if not names:
        return {}
    import xarray as xr
    from arviz_stats import diagnose as arviz_diagnose

    try:
        selected = stats[names].astype(float)
        selected = selected.assign_coords({dim: np.arange(selected.sizes[dim]) for dim in ("chain", "draw")
                                           if dim in selected.dims})
        with _quiet_numpy(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pass over one statistic (constant, short) says nothing to us
            _, results = arviz_diagnose(
                xr.DataTree.from_dict({"sample_stats": selected}), group="sample_stats", var_names=names[:1],
                sample_dims=["chain", "draw"], bfmi_threshold=bfmi_min, ess_threshold=0,
                show_diagnostics=False, return_diagnostics=True)
    except Exception as error:  # noqa: BLE001 - the other checks still stand
        return {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    return results


def _arviz_failed(sampler: Mapping[str, Any]) -> str:
    return f"Skipped: arviz_stats.diagnose failed ({sampler.get('error', 'no result')})."


def _per_chain(flags: Any) -> list[int]:
    """Count of true flags in each chain (ArviZ reports totals only)."""
    values = np.atleast_1d(np.asarray(flags.values if hasattr(flags, "values") else flags).astype(bool))
    return [int(v) for v in values.reshape(values.shape[0], -1).sum(axis=1)]



def _max_tree_depth(tree: Any, stats: Any, explicit: int | None) -> tuple[int, str]:
    """The cap the sampler ran with: argument, attempt log, run record, attributes, default."""
    if explicit is not None:
        return int(explicit), "argument"
    for attempt in reversed(record.read_attempts(tree)):
        settings = (attempt.get("settings") or {}) if isinstance(attempt, dict) else {}
        if settings.get("max_tree_depth") is not None:
            return int(settings["max_tree_depth"]), "attempt log"
    run = record.read_run(tree) or {}
    if isinstance(run, dict) and run.get("max_tree_depth") is not None:
        return int(run["max_tree_depth"]), "run record"
    for attrs, where in ((getattr(stats, "attrs", {}), "sample_stats attrs"), (tree.attrs, "attrs")):
        for key in ("max_tree_depth", "max_treedepth"):
            if attrs.get(key) is not None:
                return int(attrs[key]), where
    return DEFAULT_MAX_TREE_DEPTH, "default"


def _element_facts(posterior: Any) -> dict[str, dict[str, Any]]:
    """Per scalar quantity (labelled as in ArviZ's summary): non-finite draw count, constant or not."""
    from arviz_base import dataset_to_dataarray

    facts: dict[str, dict[str, Any]] = {}
    if not len(posterior.data_vars):
        return facts
    stacked = dataset_to_dataarray(posterior, sample_dims=["chain", "draw"])
    values = np.asarray(stacked.transpose("label", ...).values, dtype=float)
    values = values.reshape(values.shape[0], -1)
    for label, row in zip(stacked["label"].values.tolist(), values):
        finite = np.isfinite(row)
        nonfinite = int(row.size - finite.sum())
        constant = bool(nonfinite == 0 and row.size and np.ptp(row) < np.finfo(float).resolution)
        facts[str(label)] = {"nonfinite": nonfinite, "constant": constant}
    return facts


def _column(summary: Any, column: str) -> dict[str, float]:
    if summary is None or column not in getattr(summary, "columns", ()):
        return {}
    return {str(k): float(v) for k, v in summary[column].items()}


def _summary_rows(summary: Any) -> list[dict[str, Any]]:
    if summary is None or not len(getattr(summary, "index", ())):
        return []
    columns = list(summary.columns)
    lower = next((c for c in columns if str(c).endswith("_lb")), None)
    upper = next((c for c in columns if str(c).endswith("_ub")), None)
    rows = []
    for label, row in summary.iterrows():
        rows.append({
            "variable": str(label),
            "mean": _json_number(row.get("mean")),
            "sd": _json_number(row.get("sd")),
            "ci_lower": _json_number(row.get(lower)) if lower else None,
            "ci_upper": _json_number(row.get(upper)) if upper else None,
            "ess_bulk": _json_number(row.get("ess_bulk")),
            "ess_tail": _json_number(row.get("ess_tail")),
            "r_hat": _json_number(row.get("r_hat")),
            "mcse_mean": _json_number(row.get("mcse_mean")),
            "mcse_sd": _json_number(row.get("mcse_sd")),
        })
    return rows


def _empty_summary() -> Any:
    import pandas as pd

    return pd.DataFrame(columns=["mean", "sd", "ess_bulk", "ess_tail", "r_hat", "mcse_mean", "mcse_sd"])


def _names(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:_NAMES_IN_TEXT])
    return shown if len(names) <= _NAMES_IN_TEXT else f"{shown} and {len(names) - _NAMES_IN_TEXT} more"


def _json_number(value: Any) -> Any:
    """Plain int/float for JSON; NaN and infinities become None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if math.isfinite(number) else None


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
    if isinstance(value, (float, int, np.floating, np.integer, np.bool_)) and not isinstance(value, bool):
        return _json_number(value)
    return value


def _require_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float, np.integer, np.floating)) or not 0 <= value <= 1:
        raise ValueError(f"`{name}` must be a fraction in [0, 1], got {value!r}.")


def _require_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        rule = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"`{name}` must be {rule}, got {value!r}.")


def _is_datatree(data: Any) -> bool:
    return type(data).__name__ == "DataTree" and hasattr(data, "children")


class _quiet_numpy:
    """Silence numpy's RuntimeWarnings (0/0 for constant chains) while ArviZ computes."""

    def __enter__(self) -> None:
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        self._state = np.seterr(all="ignore")

    def __exit__(self, *exc: Any) -> None:
        np.seterr(**self._state)
        self._catch.__exit__(*exc)
