"""The main job: preflight and sample the motivating model of DESIGN.md on both backends.

    sigma ~ InverseGamma(2, 3);  V ~ Truncated(Normal(0, sigma), lower=0, upper=inf)

Preflight names V, the parameter sigma and the infinite bound, rewrites the site, and the
loop samples it on NumPyro and on PyMC. Writes run-<backend>.nc and a report per backend.
Run: ``make demo`` (or ``python examples/motivating.py --out out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import resilient  # noqa: E402
from examples.pathologies import motivating  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the DataTrees and reports (default: out)")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--backends", default="numpyro,pymc")
    parser.add_argument("--seed", type=int, default=2026)
    options = parser.parse_args(argv)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    from rich.console import Console

    console = Console()
    worst = 0
    for backend in options.backends.split(","):
        console.rule(f"[bold]{backend}")
        unfixed = resilient.preflight(motivating, backend=backend, fix=False)
        console.print(unfixed.table())
        data = resilient.sample(motivating, backend=backend, draws=options.draws, chains=4,
                                random_seed=options.seed, checkpoint=str(out / f"checkpoint-{backend}"))
        data.to_netcdf(out / f"run-{backend}.nc")
        from resilient.diagnostics import diagnose
        from resilient.report import write_report

        diagnostics = diagnose(data)
        console.print(diagnostics.summary_table())
        console.print(diagnostics.table())
        paths = write_report(data, out / f"report-{backend}", diagnostics=diagnostics)
        console.print(f"verdict: [bold]{diagnostics.verdict}[/]; report: {paths.get('html')}")
        worst = max(worst, {"ok": 0, "warn": 0, "fail": 1}[diagnostics.verdict])
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
