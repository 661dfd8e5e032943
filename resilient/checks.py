"""Preflight checks: evaluate the log density and its gradient before sampling and say what is wrong.

Checks, on the unconstrained space: the rewrites the model needs (applied or suggested),
literal parameters that break their rule, a finite log density and gradient at the
backend's initial point, at Stan-style uniform(-2, 2) points and at prior draws, and a
finite-difference check of the gradient at the initial point. A non-finite value is
attributed to the site whose term is non-finite, the variable whose gradient block is
non-finite, the point (constrained values) and, where known, the cause.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from resilient.distributions import IMPROPER_FAMILIES
from resilient.errors import ModelError, ParameterError, ResilientError
from resilient.findings import Finding, PreflightReport
from resilient.model import Model, NativeModel

__all__ = ["preflight", "check_compiled", "compile_model"]

_RULE_CAUSES = {
    "drop-infinite-bounds": "infinite bound",
    "half-form": "truncation at the location of a symmetric family",
    "log-space-normaliser": "truncation normaliser computed in linear space",
}


def preflight(model: Any = None, *args: Any, backend: str | None = None, fix: bool = True,
              float32: bool | None = None, random_seed: int = 0, prior_points: int = 2, uniform_points: int = 2,
              **kwargs: Any) -> PreflightReport:
    """Check a model before sampling; returns a :class:`PreflightReport` (``report.ok``, ``report.table()``).

    ``model`` and ``*args``/``**kwargs`` are as for :func:`resilient.sample`. ``backend`` may be
    ``"numpyro"`` (default for shared-API models) or ``"pymc"``; ``fix=False`` reports the
    rewrites without applying them. ``float32``: None (default) checks the precision ``resilient.sample`` starts
    in, the backend's habit (a native NumPyro function in float32 unless jax's x64 is on, as raw NumPyro runs
    it; other models in float64); True float32, False float64.
    """
    from resilient.errors import ResilientError
    from resilient.resolve import default_backend, resolve_model

    if float32 is not None and not isinstance(float32, (bool, np.bool_)):
        raise ResilientError(
            f"preflight's `float32` must be True, False or None, got {float32!r}: it checks one precision. "
            "float32='auto' is resilient.sample's (each run chooses, and checks float32 against float64 when it "
            "considers float32).")
    _check_data_names(model, kwargs)
    resolved = resolve_model(model, args, kwargs, fix=fix, float32=bool(float32))
    if float32 is None:
        from resilient.precision import RAW, default_form

        resolved, _ = default_form(resolved, RAW)
    name = default_backend(resolved, backend)
    report, _ = run_preflight(resolved, name, random_seed=random_seed, prior_points=prior_points,
                              uniform_points=uniform_points)
    return report


_PREFLIGHT_OPTIONS = ("backend", "fix", "float32", "random_seed", "prior_points", "uniform_points")


def _check_data_names(model: Any, kwargs: Mapping[str, Any]) -> None:
    """preflight's keywords are the model function's data: a name the function does not take (and no
    ``**kwargs`` of its own) is a typo, named with the closest option or parameter (as resilient.sample does)."""
    import difflib
    import inspect

    if not kwargs or not callable(model) or isinstance(model, type):
        return
    try:
        parameters = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    takes = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name in kwargs:
        if name not in takes:
            close = difflib.get_close_matches(name, [*_PREFLIGHT_OPTIONS, *takes], n=1)
            hint = f"; did you mean `{close[0]}`?" if close else "."
            label = getattr(model, "__name__", "the model function")
            raise ResilientError(f"unknown argument `{name}`{hint} It is not an option of resilient.preflight or a "
                                 f"parameter {label}() names ({', '.join(takes) or 'none'}).")


def compile_model(model: Model | NativeModel, backend: str) -> Any:
    """The adapter's compiled model; a model with no site at all is an error, never a clean report."""
    from resilient.backend import get_adapter

    compiled = get_adapter(backend).compile(model)
    if not compiled.sites and not compiled.latent_names:
        raise ModelError(
            f"{model.name} declares no site: running it called no sample() or deterministic(). Resilient runs "
            "a shared-API function (resilient.model.sample), a NumPyro function (numpyro.sample), a pm.Model "
            "or a function that returns one; check that the function builds the model it should.")
    return compiled


def run_preflight(model: Model | NativeModel, backend: str, *, random_seed: int = 0, prior_points: int = 2,
                  uniform_points: int = 2, compiled: Any = None) -> tuple[PreflightReport, Any]:
    """Compile (unless ``compiled`` is given) and check; returns the report and the compiled model
    (``None`` if it did not compile)."""
    start = time.perf_counter()
    try:
        compiled = compiled if compiled is not None else compile_model(model, backend)
    except ParameterError as error:
        finding = Finding(
            "error", "parameter", error.site, str(error), parameter=error.argument,
            values={error.argument: error.value} if error.argument else {},
            cause=str(error).split(": ", 1)[-1], fix=error.fix or f"pass a valid `{error.argument}`",
        )
        return PreflightReport(model.name, backend, (finding,), time.perf_counter() - start), None
    except ModelError as error:
        finding = Finding("error", "compile", error.site, str(error), cause=str(error), fix=error.fix)
        return PreflightReport(model.name, backend, (finding,), time.perf_counter() - start), None
    report = check_compiled(compiled, model, backend, random_seed=random_seed, prior_points=prior_points,
                            uniform_points=uniform_points)
    return PreflightReport(report.model, backend, report.findings, time.perf_counter() - start,
                           report.points_checked), compiled


def check_compiled(compiled: Any, model: Model | NativeModel, backend: str, *, random_seed: int = 0,
                   prior_points: int = 2, uniform_points: int = 2) -> PreflightReport:
    """The numerical checks on an already compiled model."""
    start = time.perf_counter()
    findings: list[Finding] = list(_rewrite_findings(compiled.sites, model.fix))
    findings += _prior_findings(compiled.sites)
    findings += _name_findings(compiled.sites)
    findings += _observed_support_findings(compiled)
    points = _points(compiled, random_seed, prior_points, uniform_points, findings)
    numeric: dict[tuple, list[Finding]] = {}
    bad_at: dict[str | None, set[int]] = {}  # per site, the points where its term or gradient is not finite
    evaluated = [(label, x, *compiled.log_density_and_gradient(x)) for label, x in points]
    for index, (label, x, value, gradient) in enumerate(evaluated):
        if np.isfinite(value) and np.all(np.isfinite(gradient)):
            continue
        for finding in _attribute(compiled, model, x, label, value, gradient):
            numeric.setdefault((finding.check, finding.site, finding.parameter), []).append(finding)
            bad_at.setdefault(finding.site, set()).add(index)
    for same in numeric.values():
        first = same[0]
        bad = len(bad_at[first.site])
        if bad < len(points):  # the site is finite somewhere: the loop can start there, so warn only
            first = replace(first, severity="warning", message=(
                f"{first.message} Non-finite at {bad} of {len(points)} points checked; sampling "
                "starts from finite points but may diverge near this region."))
        findings.append(first)
    finite = [x for _, x, value, gradient in evaluated if np.isfinite(value)]
    if finite and not any(f.severity == "error" for f in findings):
        findings += _improper_findings(compiled, finite[0])
    if points and not any(f.severity == "error" for f in findings):
        findings += _finite_difference(compiled, points[0][1], evaluated[0][3], random_seed, model.float32)
    return PreflightReport(model.name, backend, tuple(findings), time.perf_counter() - start, len(points))


def _rewrite_findings(sites: Mapping[str, Any], applied: bool) -> list[Finding]:
    findings = []
    for site in sites.values():
        for rewrite in getattr(site, "rewrites", ()):
            description = site.description or rewrite.before
            message = f"{site.name} ~ {description}: {rewrite.reason}; " + (
                f"rewritten as {rewrite.after}." if applied else f"rewrite it as {rewrite.after}."
            )
            findings.append(Finding(
                "fixed" if applied else "warning", "rewrite", site.name, message,
                parameter=", ".join(getattr(site, "inputs", ())) or None, cause=_RULE_CAUSES.get(rewrite.rule, rewrite.rule),
                fix=f"{site.name} ~ {rewrite.after}", fix_applied=applied,
            ))
    return findings


def _prior_findings(sites: Mapping[str, Any]) -> list[Finding]:
    findings = []
    for site in sites.values():
        if getattr(site, "improper_prior", False):
            findings.append(Finding(
                "info", "prior", site.name,
                f"{site.name} ~ {site.description}: an improper prior; the posterior is proper only if the "
                "data identify it.", cause="improper prior",
                fix=f"give {site.name} a weakly informative prior (e.g. Normal(0, 10))",
            ))
    return findings


#: ArviZ's sample dimensions: a variable of either name is dropped from the posterior by ArviZ's converters
SAMPLE_DIMENSIONS = ("chain", "draw")


def _name_findings(sites: Mapping[str, Any]) -> list[Finding]:
    """A site named ``chain`` or ``draw``: ArviZ's converters (``from_dict``, ``from_numpyro``) drop its draws
    without a word, as they clash with the sample dimensions; refused before sampling instead."""
    return [Finding("error", "name", name,
                    f"the site `{name}` has the name of one of ArviZ's sample dimensions {list(SAMPLE_DIMENSIONS)}: "
                    "its draws cannot be stored in the posterior (ArviZ drops them).",
                    cause="a site named as a sample dimension", fix=f"rename `{name}` (e.g. `{name}_`)")
            for name in sites if name in SAMPLE_DIMENSIONS]


def _observed_support_findings(compiled: Any) -> list[Finding]:
    """Observed values outside their family's support (or infinite), named by site, index and value.

    A backend evaluates such data in ways that hide the mistake: NumPyro's Poisson log density is finite
    at 2.5 (its lgamma form), so the model samples with the wrong data; others give -inf with no value
    named. Checked once on the data, before any point is evaluated."""
    from resilient.distributions import outside_support

    try:
        observed = compiled.observed_data()
    except Exception:  # noqa: BLE001  (an adapter that cannot list its data: nothing to check here)
        return []
    findings = []
    for name, data in observed.items():
        site = compiled.sites.get(name)
        family = getattr(site, "family", None) if site is not None else None
        found = outside_support(family, data)
        if found is None:
            continue
        where, value, count, words = found
        description = f"{name} ~ {site.description}" if site is not None and site.description else name
        findings.append(Finding(
            "error", "observed-data", name,
            f"{description}: observed value {name}{where} = {value:g} is outside the support "
            f"({count} of {np.size(data)} values); every observed value must be {words}"
            + (f" for {family}" if family else "") + ".",
            values={f"{name}{where}": value}, cause="observed value outside the support",
            fix=f"correct or drop the data of {name}, or give it a family whose support holds them"))
    return findings


def _improper_findings(compiled: Any, x: np.ndarray) -> list[Finding]:
    """Latent sites with an improper prior (Flat, HalfFlat, or an unknown native family) along which the
    log density is exactly linear: nothing identifies them, so the posterior is improper.

    Slope 0 (a lone Flat) is a warning: the draws wander and the loop's diagnostics say so. A non-zero slope
    (a lone HalfFlat: the Jacobian of its log transform) is an error: the draws run off to infinity, where
    R-hat and ESS are NaN and no diagnostic can judge them."""
    blocks = compiled.blocks()
    base = compiled.log_density(x)
    findings = []
    for name in compiled.latent_names:
        site = compiled.sites.get(name)
        family = getattr(site, "family", None)
        if family not in (None, *IMPROPER_FAMILIES) or name not in blocks or len(findings) >= 5:
            continue
        direction = np.zeros_like(x)
        direction[blocks[name]] = 1.0
        linear = _linear_along(compiled, x, base, direction)
        if linear is None:
            continue
        slope, tolerance = linear
        description = f"{name} ~ {site.description}" if site is not None and site.description else name
        runs_off = abs(slope) > tolerance
        findings.append(Finding(
            "error" if runs_off else "warning", "improper-posterior", name,
            f"{description}: the posterior is improper: the log density is "
            + (f"linear in {name} (slope {slope:.3g} on the unconstrained scale), so the draws run off to "
               "infinity" if runs_off else f"constant in {name}, so its draws wander without bound")
            + f"; no observed data or other term depends on {name}.", parameter=name,
            cause="improper posterior",
            fix=f"give {name} a proper prior (e.g. HalfNormal(10) or Normal(0, 10)), or make data depend on it"))
    named = {f.site for f in findings}
    unexplained = [n for n in compiled.latent_names if n in blocks and n not in named
                   and getattr(compiled.sites.get(n), "improper_prior", False)]
    if unexplained and not findings:
        findings += _improper_together(compiled, x, base, blocks, unexplained)
    return findings


def _linear_along(compiled: Any, x: np.ndarray, base: float, direction: np.ndarray) -> tuple[float, float] | None:
    """``(slope, tolerance)`` where the log density is exactly linear along ``direction`` from ``x`` over steps up
    to 300 (an improper direction: nothing pins the draws down along it); None where it is not, or not finite."""
    steps = (1.0, -1.0, 30.0, -30.0, 300.0, -300.0)
    with np.errstate(all="ignore"):
        changes = [compiled.log_density(x + t * direction) - base for t in steps]
    if not np.all(np.isfinite(changes)):
        return None
    slope = changes[0]
    tolerance = 1e-7 * (1.0 + abs(base))
    if not all(abs(change - slope * t) <= tolerance * (1.0 + abs(t)) for change, t in zip(changes, steps)):
        return None
    return slope, tolerance


#: the largest unconstrained dimension for which preflight looks for an improper direction shared by several
#: latents (a finite-difference Hessian: two gradients per dimension)
TOGETHER_MAX_DIMENSION = 200


def _improper_together(compiled: Any, x: np.ndarray, base: float, blocks: Mapping[str, slice],
                       improper: list[str]) -> list[Finding]:
    """An improper prior whose latent only other latents depend on, with nothing observed below them: ``mu ~
    Flat()``, ``theta ~ Normal(mu, 1)`` and no data on ``theta``. Moving ``mu`` alone changes ``theta``'s term,
    but moving both by the same amount changes nothing, so the posterior is improper along that direction.

    Candidate directions are the Hessian's near-null eigenvectors (finite differences of the gradient, for at
    most :data:`TOGETHER_MAX_DIMENSION` dimensions) that move an improper latent; one counts only if the log
    density is exactly linear along it over steps up to 300, as for a single latent."""
    n = x.size
    if n > TOGETHER_MAX_DIMENSION or n < 2:
        return []
    h = 1e-3
    columns = []
    try:
        with np.errstate(all="ignore"):
            for i in range(n):
                step = np.zeros(n)
                step[i] = h
                columns.append((np.asarray(compiled.log_density_and_gradient(x + step)[1], dtype=float)
                                - np.asarray(compiled.log_density_and_gradient(x - step)[1], dtype=float)) / (2 * h))
    except Exception:  # noqa: BLE001 - a gradient that cannot be taken here: the loop's diagnostics still judge it
        return []
    hessian = np.asarray(columns, dtype=float)
    if hessian.shape != (n, n) or not np.all(np.isfinite(hessian)):
        return []
    values, vectors = np.linalg.eigh((hessian + hessian.T) / 2)
    scale = max(float(np.max(np.abs(values))), 1.0)
    owner = np.empty(n, dtype=object)
    for name, block in blocks.items():
        owner[block] = name
    for k in np.argsort(np.abs(values))[:3]:
        if abs(values[k]) > 1e-4 * scale:
            break
        vector = vectors[:, k]
        on_improper = [i for name in improper for i in range(n)[blocks[name]] if abs(vector[i]) > 0.1]
        if not on_improper:
            continue
        direction = np.round(vector / vector[on_improper[0]], 4)
        linear = _linear_along(compiled, x, base, direction)
        if linear is None:
            continue
        slope, tolerance = linear
        moved = list(dict.fromkeys(owner[i] for i in np.flatnonzero(direction)))
        name = owner[on_improper[0]]
        site = compiled.sites.get(name)
        description = f"{name} ~ {site.description}" if site is not None and site.description else name
        others = [m for m in moved if m != name]
        names = [f"`{m}`" for m in [name, *others]]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        together = " and ".join(f"`{m}`" for m in others) if len(others) <= 2 else ", ".join(names[1:])
        how = "by the same amount" if np.all(np.isin(direction[direction != 0], (1.0,))) else "in fixed proportion"
        runs_off = abs(slope) > tolerance
        return [Finding(
            "error" if runs_off else "warning", "improper-posterior", name,
            f"{description}: the posterior is improper: the log density is "
            + (f"linear (slope {slope:.3g})" if runs_off else "constant")
            + f" when {listed} move together {how} (on the unconstrained scale), so their draws "
            + ("run off to infinity" if runs_off else "wander without bound")
            + f"; {together} hang{'s' if len(others) == 1 else ''} below `{name}` and no observed data depend on "
            + ("it" if len(others) == 1 else "them") + ".",
            parameter=name, values={f"direction of {m}": direction[blocks[m]].tolist() for m in moved},
            cause="improper posterior",
            fix=f"give {name} a proper prior (e.g. Normal(0, 10)), or observe data that depend on {together}")]
    return []


def _points(compiled: Any, seed: int, prior_points: int, uniform_points: int,
            findings: list[Finding]) -> list[tuple[str, np.ndarray]]:
    points = []
    plan = [("initial point", "default", seed)]
    plan += [(f"uniform(-2, 2) point {i + 1}", "uniform", seed + 1 + i) for i in range(uniform_points)]
    plan += [(f"prior draw {i + 1}", "prior", seed + 101 + i) for i in range(prior_points)]
    failed: dict[str, str] = {}
    for label, strategy, point_seed in plan:
        if strategy in failed:
            continue
        try:
            points.append((label, np.asarray(compiled.initial_point(strategy, point_seed), dtype=float)))
        except Exception as error:  # a prior that cannot be drawn is worth saying, not a crash
            failed[strategy] = f"{type(error).__name__}: {error}"
    for strategy, reason in failed.items():
        improper = strategy == "prior" and any(getattr(site, "improper_prior", False)
                                               for site in compiled.sites.values())
        findings.append(Finding(
            "info" if improper else "warning", "initial-point", None,
            f"No {strategy} points could be made ({reason})"
            + ("; expected with an improper (Flat) prior. The other points were checked." if improper else "."),
            cause="improper prior" if improper else reason))
    return points


def _format_values(values: Mapping[str, Any]) -> str:
    parts = []
    for name, value in values.items():
        array = np.asarray(value, dtype=float)
        text = f"{array.item():.4g}" if array.size == 1 else np.array2string(array, precision=3, threshold=6)
        parts.append(f"{name}={text}")
    return ", ".join(parts)


def _attribute(compiled: Any, model: Model | NativeModel, x: np.ndarray, label: str, value: float,
               gradient: np.ndarray) -> list[Finding]:
    """Which site and which variable make the log density or gradient non-finite at ``x``, and why."""
    constrained = {k: v for k, v in compiled.constrain(x).items() if k in compiled.latent_names}
    where = f"{_format_values(constrained)} ({label})" if constrained else f"the {label}"
    terms = compiled.site_log_densities(x)
    gradients = compiled.site_gradients(x)
    findings = []
    for site_name, term in terms.items():
        site = compiled.sites.get(site_name)
        description = f"{site_name} ~ {site.description}" if site is not None and site.description else site_name
        bad_inputs = [latent for latent, block in gradients.get(site_name, {}).items()
                      if not np.all(np.isfinite(block))]
        if not np.isfinite(term):
            cause = _cause(site, model, constrained, bad_inputs, term)
            findings.append(Finding(
                "error", "log-density", site_name,
                f"{description}: the log density is {_word(term)} at {where} because {cause}.",
                parameter=bad_inputs[0] if bad_inputs else None, values=constrained, cause=cause,
                fix=_suggested_fix(site, cause),
            ))
            continue
        for latent in bad_inputs:
            cause = _cause(site, model, constrained, [latent], term)
            findings.append(Finding(
                "error", "gradient", site_name,
                f"{description}: the gradient with respect to {latent} is NaN or infinite at {where} "
                f"because {cause}.", parameter=latent, values=constrained, cause=cause,
                fix=_suggested_fix(site, cause),
            ))
    if not findings and np.isfinite(value):  # the value is finite: the gradient is what is not
        latents = [name for name, block in compiled.blocks().items() if not np.all(np.isfinite(gradient[block]))]
        findings.append(Finding(
            "error", "gradient", None,
            f"The gradient of the log density with respect to {', '.join(latents) or 'the latents'} is NaN or "
            f"infinite at {where}, where the log density ({value:.6g}) and every site term's gradient are finite: "
            "the engine differentiates the log density otherwise than the site terms are (an autodiff through a "
            "guarded branch), or the Jacobian of a transform overflows there.", parameter=latents[0] if latents else
            None, values=constrained, cause="gradient of the whole log density"))
    if not findings:
        findings.append(Finding(
            "error", "log-density", None,
            f"The log density is {_word(value)} at {where} but no single site term is: "
            "the Jacobian of a transform may overflow there.", values=constrained, cause="transform overflow",
        ))
    return findings


def _word(value: float) -> str:
    return "NaN" if np.isnan(value) else ("-inf" if value < 0 else "+inf")


def _cause(site: Any, model: Model | NativeModel, values: Mapping[str, Any], inputs: list[str], term: float) -> str:
    rules = {r.rule: r for r in getattr(site, "rewrites", ())}
    if "drop-infinite-bounds" in rules:
        rewrite = rules["drop-infinite-bounds"]
        bound = f"{rewrite.infinite_bounds[0]} bound is" if len(rewrite.infinite_bounds) == 1 else "bounds are"
        return f"the {bound} infinite ({rewrite.reason.split(': ', 1)[-1]})"
    if "log-space-normaliser" in rules and model.float32:
        return "the truncation normaliser underflows to log(0) in float32: the bound is far in the tail"
    literal_nan = re.search(r"\bnan\b", getattr(site, "description", None) or "")
    if literal_nan:
        return f"a literal parameter of its distribution is NaN ({site.name} ~ {site.description})"
    negative = [n for n in inputs if n in values and np.any(np.asarray(values[n], float) < 0)]
    if negative:
        return (f"{', '.join(negative)} is negative here and an expression of it is undefined "
                "(the square root or log of a negative number?)")
    if site is not None and getattr(site, "kind", "") == "observed":
        return "the observed value is outside the support, or a parameter is invalid at this point"
    if np.isneginf(term):
        return "the value is outside the support of its distribution, or a parameter is invalid here"
    return "a parameter of its distribution is invalid here (negative scale, probability outside [0, 1]?)"


def _suggested_fix(site: Any, cause: str) -> str | None:
    rewrites = getattr(site, "rewrites", ())
    if rewrites:
        return f"{site.name} ~ {rewrites[-1].after} (run with fix=True)"
    if "is negative here" in cause:
        return "constrain the input to be positive (e.g. a HalfNormal or LogNormal prior) or guard the expression"
    if "literal parameter of its distribution is NaN" in cause:
        return "give that parameter a number (a NaN often comes from a statistic of data with missing values)"
    return None


def _finite_difference(compiled: Any, x: np.ndarray, gradient: np.ndarray, seed: int, float32: bool,
                       directions: int = 2) -> list[Finding]:
    """Compare ``gradient`` (at ``x``) with central differences along random directions (Stan's
    diagnose, cheaper)."""
    rng = np.random.default_rng(seed)
    step = 1e-2 if float32 else 1e-5
    tolerance = 5e-2 if float32 else 1e-4
    for _ in range(directions):
        direction = rng.normal(size=x.shape)
        direction /= np.linalg.norm(direction) or 1.0
        upper = compiled.log_density(x + step * direction)
        lower = compiled.log_density(x - step * direction)
        numeric = (upper - lower) / (2 * step)
        analytic = float(np.dot(gradient, direction))
        if not np.isfinite(numeric):
            continue
        if abs(numeric - analytic) > tolerance * (1.0 + abs(analytic) + abs(numeric)):
            return [Finding(
                "warning", "finite-difference", None,
                f"The gradient disagrees with finite differences at the initial point: directional derivative "
                f"{analytic:.6g} (autodiff) vs {numeric:.6g} (finite differences). A non-differentiable "
                "expression (abs, where, floor) or a custom gradient may be wrong.",
                cause="gradient mismatch", values={"autodiff": analytic, "finite_difference": numeric},
            )]
    return []
