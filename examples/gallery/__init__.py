"""A corpus of models nobody here wrote: PyMC's example gallery and NumPyro's examples, written
faithfully (see each builder's docstring for the source file), with small deterministic data.

``MODELS`` maps a name to a :class:`GalleryModel` (name, dialect "pymc" or "numpyro", builder, source).
A PyMC builder returns a ``pm.Model``; a NumPyro builder returns ``(model_fn, args)``.
``benchmarks/gallery.py`` runs each raw and through Resilient; ``tests/test_gallery.py`` checks a subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from examples.gallery import numpyro_models, pymc_models

PYMC_EXAMPLES = "pymc-devs/pymc-examples"
NUMPYRO = "pyro-ppl/numpyro"


@dataclass(frozen=True)
class GalleryModel:
    name: str
    dialect: str  # "pymc" or "numpyro"
    builder: Callable
    source: str  # repository and path of the notebook or example file

    def build(self):
        return self.builder()


def _pymc(name, builder, path):
    return GalleryModel(f"pymc-{name}", "pymc", builder, f"{PYMC_EXAMPLES}:examples/{path}")


def _numpyro(name, builder, path):
    return GalleryModel(f"numpyro-{name}", "numpyro", builder, f"{NUMPYRO}:examples/{path}")


_ALL = [
    _pymc("stochastic_volatility", pymc_models.stochastic_volatility, "case_studies/stochastic_volatility.myst.md"),
    _pymc("lkj", pymc_models.lkj_mvnormal, "howto/LKJ.myst.md"),
    _pymc("marginalized_gmm", pymc_models.marginalized_gmm,
          "mixture_models/marginalized_gaussian_mixture_model.myst.md"),
    _pymc("gp_marginal", pymc_models.gp_marginal, "gaussian_processes/GP-Marginal.myst.md"),
    _pymc("robust_regression", pymc_models.robust_regression, "generalized_linear_models/GLM-robust.myst.md"),
    _pymc("rolling_regression", pymc_models.rolling_regression,
          "generalized_linear_models/GLM-rolling-regression.myst.md"),
    _pymc("rat_tumour", pymc_models.rat_tumour, "generalized_linear_models/GLM-hierarchical-binomial-model.myst.md"),
    _pymc("eight_schools_centered", pymc_models.eight_schools_centered,
          "diagnostics_and_criticism/Diagnosing_biased_Inference_with_Divergences.myst.md"),
    _pymc("rugby", pymc_models.rugby, "case_studies/rugby_analytics.myst.md"),
    _pymc("best", pymc_models.best, "case_studies/BEST.myst.md"),
    _pymc("baseball", pymc_models.baseball, "case_studies/hierarchical_partial_pooling.myst.md"),
    _pymc("ar2", pymc_models.ar2, "time_series/AR.myst.md"),
    _pymc("radon_varying_slope", pymc_models.radon_varying_slope, "case_studies/multilevel_modeling.myst.md"),
    _pymc("radon_varying_intercept", pymc_models.radon_varying_intercept, "case_studies/multilevel_modeling.myst.md"),
    _pymc("truncated_regression", pymc_models.truncated_regression,
          "generalized_linear_models/GLM-truncated-censored-regression.myst.md"),
    _pymc("censored_regression", pymc_models.censored_regression,
          "generalized_linear_models/GLM-truncated-censored-regression.myst.md"),
    _numpyro("stochastic_volatility", numpyro_models.stochastic_volatility, "stochastic_volatility.py"),
    _numpyro("horseshoe", numpyro_models.horseshoe_regression, "horseshoe_regression.py"),
    _numpyro("dawid_skene", numpyro_models.dawid_skene, "annotation.py"),
    _numpyro("hmm_enum", numpyro_models.hmm_enum, "hmm_enum.py"),
    _numpyro("gp", numpyro_models.gp, "gp.py"),
    _numpyro("baseball_pooled", numpyro_models.baseball_partially_pooled, "baseball.py"),
    _numpyro("baseball_logit", numpyro_models.baseball_logit, "baseball.py"),
    _numpyro("ucbadmit", numpyro_models.ucbadmit, "ucbadmit.py"),
    _numpyro("funnel", numpyro_models.funnel, "funnel.py"),
    _numpyro("ar2", numpyro_models.ar2, "ar2.py"),
    _numpyro("zero_inflated_poisson", numpyro_models.zero_inflated_poisson, "zero_inflated_poisson.py"),
    _numpyro("toy_mixture", numpyro_models.toy_mixture, "toy_mixture_model_discrete_enumeration.py"),
]

MODELS: dict[str, GalleryModel] = {m.name: m for m in _ALL}
