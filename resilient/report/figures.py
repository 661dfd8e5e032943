"""The report's plots as base64 PNG: arviz-plots on matplotlib's Agg backend, plain matplotlib where an
arviz-plots function fails (trace, rank, energy, pair plots, and the attempt timeline).

Dependency rule: numpy and the standard library at import time; matplotlib, arviz-plots and xarray inside
the functions that draw.
"""

from __future__ import annotations

import base64
import io
import math
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

from resilient.diagnostics import Diagnostics

__all__ = ["MAX_PLOT_VARIABLES", "figures_of"]

#: scalar quantities drawn in trace/rank plots at most; the rest are noted, and are in the table.
MAX_PLOT_VARIABLES = 8


@contextmanager
def _agg_backend() -> Iterator[Any]:
    """matplotlib's Agg backend for the duration (nothing is displayed), then the caller's back."""
    import matplotlib
    import matplotlib.pyplot as plt

    try:
        previous = matplotlib.get_backend(auto_select=False)
    except TypeError:  # matplotlib < 3.10
        previous = matplotlib.rcParams._get("backend")  # noqa: SLF001 - read without resolving
    switched = str(previous).lower() != "agg"
    if switched:
        plt.switch_backend("agg")
    try:
        yield plt
    finally:
        if switched:
            if previous is None:
                from matplotlib import rcsetup

                sentinel = getattr(rcsetup, "_auto_backend_sentinel", None)
                if sentinel is not None:
                    plt.switch_backend(sentinel)  # resolve again later, as before
            else:
                plt.switch_backend(previous)


def figures_of(data: Any, diagnostics: Diagnostics, report: Mapping[str, Any],
             max_plot_variables: int) -> tuple[list[dict[str, str]], list[str]]:
    """The report's plots as base64 PNG, each from arviz-plots or, if that fails, plain matplotlib."""
    if int(max_plot_variables) < 1:
        raise ValueError(f"`max_plot_variables` must be a positive integer, got {max_plot_variables!r}.")
    figures: list[dict[str, str]] = []
    notes: list[str] = []
    with _agg_backend() as plt, _quiet():
        if report["attempts"]:
            figures += _try(notes, "attempt timeline", None, lambda: _timeline_figure(plt, report["attempts"]),
                            "plot-timeline", "Attempt durations, coloured by outcome.", "Attempt timeline")
        if diagnostics.draws < 2 or "posterior" not in data.children:
            notes.append("Too few draws to plot.")
            return figures, notes
        labels, skipped = _plot_labels(diagnostics, int(max_plot_variables))
        total = len(diagnostics.summary.index)
        if skipped:
            notes.append(f"Not plotted (NaN, infinite or constant draws): {', '.join(skipped[:10])}"
                         + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "") + ".")
        if not labels:
            notes.append("No quantity can be plotted.")
            return figures, notes
        if len(labels) < total - len(skipped):
            notes.append(f"The plots show {len(labels)} of {total - len(skipped)} scalar quantities, the least "
                         "converged (highest R-hat, else lowest bulk ESS); the summary table has them all.")
        order = {label: i for i, label in enumerate(str(v) for v in diagnostics.summary.index)}
        tree = _plot_tree(data, sorted(labels, key=order.__getitem__))
        n = len(labels)
        figures += _try(
            notes, "trace", lambda: _arviz_trace(plt, tree, n), lambda: _plain_trace(plt, tree),
            "plot-trace", "Per-chain density and trace of each plotted quantity; ticks along the bottom mark divergent "
            "transitions.",
            "Trace plots")
        if diagnostics.check("rhat").verdict in ("warn", "fail"):
            figures += _try(
                notes, "rank", lambda: _arviz_rank(tree, n), lambda: _plain_rank(plt, tree),
                "plot-rank", "Rank plots (fractional rank ECDF difference per chain; drawn because R-hat is high): "
                "chains that mix well stay near zero; highlighted points fail the multi-chain uniformity test.",
                "Rank plots")
        stats = data["sample_stats"] if "sample_stats" in data.children else None
        if stats is not None and "energy" in stats.data_vars:
            energy_tree = _energy_tree(stats)
            figures += _try(
                notes, "energy", lambda: _arviz_energy(energy_tree, diagnostics),
                lambda: _plain_energy(plt, energy_tree),
                "plot-energy", "Energy: marginal energy vs. energy transitions, with E-BFMI per chain; the two "
                "distributions should match.", "Energy plot")
        else:
            notes.append("No energy plot: sample_stats has no `energy`.")
        if len(labels) >= 2:
            x_label, y_label = labels[0], labels[1]
            figures += _try(
                notes, "pair", lambda: _arviz_pair(tree, x_label, y_label),
                lambda: _plain_pair(plt, tree, x_label, y_label),
                "plot-pair", f"{y_label} against {x_label} (the two least converged quantities); red points are "
                "divergent transitions.", "Pair plot")
        else:
            notes.append("No pair plot: only one quantity can be plotted.")
    return figures, notes


def _try(notes: list[str], name: str, arviz_plot: Any, fallback: Any, figure_id: str, caption: str,
         alt: str) -> list[dict[str, str]]:
    """Draw with arviz-plots; on any error, note it and draw with plain matplotlib instead."""
    import matplotlib.pyplot as plt

    started = time.perf_counter()
    before = set(plt.get_fignums())
    fig = None
    try:
        if arviz_plot is not None:
            try:
                fig = arviz_plot()
            except Exception as error:  # noqa: BLE001 - a plot must never sink the report
                notes.append(f"The {name} plot was drawn with plain matplotlib: arviz-plots raised "
                             f"{type(error).__name__}: {str(error)[:200]}")
                for number in set(plt.get_fignums()) - before:
                    plt.close(number)
                fig = None
        if fig is None:
            fig = fallback()
        png = _png(fig)
    except Exception as error:  # noqa: BLE001
        notes.append(f"The {name} plot could not be drawn: {type(error).__name__}: {str(error)[:200]}")
        return []
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
    seconds = time.perf_counter() - started
    return [{"id": figure_id, "png": png, "caption": caption, "alt": alt, "seconds": f"{seconds:.2f}"}]


_DPI = 72


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plot_labels(diagnostics: Diagnostics, limit: int) -> tuple[list[str], list[str]]:
    """Plottable quantities, least converged first (highest R-hat if any is too high, else lowest ESS)."""
    rows = diagnostics.summary_rows()
    finite = diagnostics.check("finite_draws").variables
    rhat_check = diagnostics.check("rhat")
    constant = tuple(rhat_check.details.get("constant", ())) if isinstance(rhat_check.details, Mapping) else ()
    skipped = [r["variable"] for r in rows if r["variable"] in finite or r["variable"] in constant
               or (r["sd"] is not None and r["sd"] == 0)]
    usable = [r for r in rows if r["variable"] not in skipped]
    rhat_max = diagnostics.thresholds.get("rhat_max", 1.01)
    any_high = any(r["r_hat"] is not None and r["r_hat"] > rhat_max for r in usable)

    def badness(row: Mapping[str, Any]) -> tuple[float, float]:
        rhat = row["r_hat"] if row["r_hat"] is not None else 0.0
        ess = row["ess_bulk"] if row["ess_bulk"] is not None else math.inf
        return (-rhat, ess) if any_high else (ess, -rhat)

    ordered = sorted(usable, key=badness)
    return [r["variable"] for r in ordered[:limit]], skipped


def _plot_tree(data: Any, labels: list[str]) -> Any:
    """A small DataTree of the chosen scalar quantities (one variable each) plus `diverging`."""
    import xarray as xr
    from arviz_base import dataset_to_dataarray

    posterior = data["posterior"].to_dataset()
    stacked = dataset_to_dataarray(posterior, sample_dims=["chain", "draw"]).transpose("label", "chain", "draw")
    index = {str(label): i for i, label in enumerate(stacked["label"].values.tolist())}
    values = np.asarray(stacked.values, dtype=float)
    coords = {"chain": np.arange(values.shape[1]), "draw": np.arange(values.shape[2])}
    plotted = xr.Dataset({label: (("chain", "draw"), values[index[label]]) for label in labels}, coords=coords)
    groups = {"posterior": plotted}
    if "sample_stats" in data.children and "diverging" in data["sample_stats"].data_vars:
        diverging = np.asarray(data["sample_stats"]["diverging"].values).astype(bool)
        if diverging.shape == values.shape[1:]:
            groups["sample_stats"] = xr.Dataset({"diverging": (("chain", "draw"), diverging)}, coords=coords)
    return xr.DataTree.from_dict(groups)


def _energy_tree(stats: Any) -> Any:
    import xarray as xr

    energy = np.asarray(stats["energy"].values, dtype=float)
    energy = energy.reshape(energy.shape[0], -1) if energy.ndim >= 1 else energy.reshape(1, 1)
    coords = {"chain": np.arange(energy.shape[0]), "draw": np.arange(energy.shape[1])}
    return xr.DataTree.from_dict({"sample_stats": xr.Dataset({"energy": (("chain", "draw"), energy)}, coords=coords)})


def _arviz_trace(plt: Any, tree: Any, n: int) -> Any:
    from arviz_plots import plot_trace_dist

    pc = plot_trace_dist(tree, compact=False, backend="matplotlib",
                         figure_kwargs={"figsize": (11, 1.4 * n + 0.6), "layout": "constrained"})
    return pc.get_viz("figure")


def _arviz_rank(tree: Any, n: int) -> Any:
    from arviz_plots import plot_rank

    columns = min(n, 4)
    rows = math.ceil(n / columns)
    pc = plot_rank(tree, backend="matplotlib", col_wrap=columns,
                   figure_kwargs={"figsize": (2.9 * columns, 2.3 * rows + 0.4), "layout": "constrained"})
    return pc.get_viz("figure")


def _arviz_energy(tree: Any, diagnostics: Diagnostics) -> Any:
    from arviz_plots import plot_energy

    pc = plot_energy(tree, backend="matplotlib", threshold=diagnostics.thresholds.get("bfmi_min", 0.3),
                     figure_kwargs={"figsize": (11, 3.2), "layout": "constrained"})
    return pc.get_viz("figure")


def _arviz_pair(tree: Any, x_label: str, y_label: str) -> Any:
    from arviz_plots import plot_pair_focus

    pc = plot_pair_focus(tree, y_label, var_names=[x_label], backend="matplotlib",
                         visuals={"divergence": {"color": "#cf222e", "alpha": 0.9}},
                         figure_kwargs={"figsize": (6, 4.5), "layout": "constrained"})
    fig = pc.get_viz("figure")
    for axis in fig.axes:
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
    return fig


def _plain_trace(plt: Any, tree: Any) -> Any:
    posterior = tree["posterior"]
    names = list(posterior.data_vars)
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 1.4 * len(names) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]}, layout="constrained")
    for row, name in enumerate(names):
        values = np.asarray(posterior[name].values)
        for chain in values:
            axes[row, 0].hist(chain, bins=30, histtype="step", density=True)
            axes[row, 1].plot(chain, linewidth=0.6)
        axes[row, 0].set_ylabel(name)
    axes[-1, 1].set_xlabel("draw")
    return fig


def _plain_rank(plt: Any, tree: Any) -> Any:
    posterior = tree["posterior"]
    names = list(posterior.data_vars)
    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.9 * columns, 2.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for axis, name in zip(axes.flat, names):
        values = np.asarray(posterior[name].values)
        ranks = np.argsort(np.argsort(values.ravel())).reshape(values.shape)
        for chain in ranks:
            axis.hist(chain, bins=20, range=(0, ranks.size), histtype="step")
        axis.set_title(name)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    return fig


def _plain_energy(plt: Any, tree: Any) -> Any:
    energy = np.asarray(tree["sample_stats"]["energy"].values, dtype=float)
    fig, axis = plt.subplots(figsize=(11, 3.2), layout="constrained")
    centred = (energy - energy.mean(axis=1, keepdims=True)).ravel()
    axis.hist(centred, bins=40, alpha=0.5, density=True, label="marginal energy")
    axis.hist(np.diff(energy, axis=1).ravel(), bins=40, alpha=0.5, density=True, label="energy transition")
    axis.legend()
    return fig


def _plain_pair(plt: Any, tree: Any, x_label: str, y_label: str) -> Any:
    posterior = tree["posterior"]
    x = np.asarray(posterior[x_label].values).ravel()
    y = np.asarray(posterior[y_label].values).ravel()
    fig, axis = plt.subplots(figsize=(6, 4.5), layout="constrained")
    axis.scatter(x, y, s=6, alpha=0.4)
    if "sample_stats" in tree.children:
        diverging = np.asarray(tree["sample_stats"]["diverging"].values).ravel()
        axis.scatter(x[diverging], y[diverging], s=14, color="#cf222e", label="divergent")
        if diverging.any():
            axis.legend()
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    return fig


_OUTCOME_COLOURS = {"accepted": "#1a7f37", "retry": "#bf8700", "gave-up": "#cf222e", "budget": "#8250df",
                    "interrupted": "#6e7781", "error": "#cf222e"}


def _timeline_figure(plt: Any, attempts: list[Mapping[str, Any]]) -> Any:
    fig, axis = plt.subplots(figsize=(9, 0.45 * len(attempts) + 1.2), layout="constrained")
    start = 0.0
    seen: dict[str, Any] = {}
    for row, attempt in enumerate(attempts):
        seconds = attempt.get("seconds")
        seconds = float(seconds) if isinstance(seconds, (int, float)) and math.isfinite(seconds) else 0.0
        outcome = str(attempt.get("outcome", "?"))
        colour = _OUTCOME_COLOURS.get(outcome, "#6e7781")
        bar = axis.barh(row, max(seconds, 1e-3), left=start, color=colour, height=0.6)
        seen.setdefault(outcome, bar)
        label = f"{seconds:.1f} s" + (f" · {attempt['remedy']}" if attempt.get("remedy") else "")
        axis.text(start + max(seconds, 1e-3), row, "  " + label, va="center", fontsize=8)
        start += seconds
    axis.set_yticks(range(len(attempts)),
                    [f"#{a.get('attempt', i + 1)} {a.get('backend', '')}" for i, a in enumerate(attempts)])
    axis.invert_yaxis()
    axis.set_xlabel("seconds since the first attempt started")
    axis.set_xlim(0, max(start, 1e-3) * 1.35)
    fig.legend(list(seen.values()), list(seen.keys()), loc="outside right upper", fontsize=8, frameon=False)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    return fig


class _quiet:
    """numpy's RuntimeWarnings off while plotting (KDEs of near-constant chains divide by 0)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.filterwarnings("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._catch.__exit__(*exc)
