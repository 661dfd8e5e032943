"""Native pm.Model sites: descriptions, structured facts (family, parameter inputs) and dependencies."""

from __future__ import annotations

from typing import Any
import numpy as np
from resilient.model import Site


def _format_input(var: Any, named: set) -> str:
    if var in named and getattr(var, "name", None):
        return var.name
    data = getattr(var, "data", None)
    if data is not None:
        array = np.asarray(data)
        if array.ndim == 0:
            value = array.item()
            if isinstance(value, float):
                if np.isinf(value):
                    return "inf" if value > 0 else "-inf"
                return f"{value:g}"
            return str(value)
        return np.array2string(array, precision=4, threshold=6, separator=", ").replace("\n", "")
    try:
        from pymc.printing import _str_for_input_var

        return _str_for_input_var(var, formatting="plain", named_vars=named)
    except Exception:  # noqa: BLE001 - a description must never fail
        return "<expr>"


def _describe_rv(rv: Any, named: set) -> str:
    """``Truncated(Normal(0, sigma), lower=0, upper=inf)``, ``InverseGamma(2, 3)`` ..."""
    node = rv.owner
    op = node.op
    print_name = getattr(op, "_print_name", None)
    family = print_name[0] if print_name else type(op).__name__
    from pytensor.tensor.random.type import RandomType
    from pytensor.tensor.type_other import NoneTypeT

    if type(op).__name__ == "TruncatedRV":
        args = list(node.inputs[2:])  # rng, size, *base params, lower, upper
    else:
        try:
            args = list(op.dist_params(node))
        except Exception:  # noqa: BLE001
            args = [x for x in node.inputs if not isinstance(x.type, (RandomType, NoneTypeT))]
    texts = [_format_input(a, named) for a in args]
    if family.startswith("Truncated") and family != "Truncated" and len(texts) >= 2:
        base = family[len("Truncated"):]
        lower, upper = texts[-2:]
        return f"Truncated({base}({', '.join(texts[:-2])}), lower={lower}, upper={upper})"
    return f"{family}({', '.join(texts)})"


def _parents(var: Any, sites: set) -> tuple[str, ...]:
    """Names of the sites whose values feed ``var`` directly (not through another site)."""
    from pytensor.graph.traversal import ancestors

    start = list(var.owner.inputs) if var.owner is not None else []
    found = []
    for ancestor in ancestors(start, blockers=sites):
        if ancestor in sites and ancestor is not var and ancestor.name not in found:
            found.append(ancestor.name)
    return tuple(found)


#: PyMC's parameter order -> the shared API's names, for the families whose sites the loop reasons about.
_PARAMETERS = {
    "Normal": ("mu", "sigma"), "StudentT": ("nu", "mu", "sigma"), "Cauchy": ("alpha", "beta"),
    "Laplace": ("mu", "b"), "Logistic": ("mu", "s"), "LogNormal": ("mu", "sigma"),
}


def _facts(rv: Any, latents: set) -> dict[str, Any]:
    """Family (shared-API name) and, per parameter, the latent variables it depends on."""
    from pytensor.graph.traversal import ancestors

    from resilient.distributions import FAMILIES

    print_name = getattr(rv.owner.op, "_print_name", None)
    family = print_name[0] if print_name and print_name[0] in FAMILIES else None
    if family not in _PARAMETERS:
        return {"family": family}
    params = list(rv.owner.op.dist_params(rv.owner))
    inputs = {}
    for pname, param in zip(_PARAMETERS[family], params):
        found = [a.name for a in ancestors([param], blockers=latents) if a in latents and a is not rv]
        inputs[pname] = tuple(dict.fromkeys(found))
    return {"family": family, "parameter_inputs": inputs}


def _fgraph_convertible(model: Any) -> bool:
    """Whether PyMC's model fgraph can hold ``model`` (what :func:`noncentred_model` rewrites)."""
    return model.parent is None and all(v is None for v in model.rvs_to_initial_values.values())


#: PyMC family -> the positions of its location (None: it has none) and scale among ``op.dist_params``: the
#: latent families :func:`noncentred_model` samples as ``loc + scale * raw`` (LogNormal as ``exp(loc + scale *
#: raw)``; the Half- families as ``scale * raw`` with raw on the half line, log-transformed as x was).
_LOC_SCALE = {"Normal": (0, 1), "StudentT": (1, 2), "Laplace": (0, 1), "Cauchy": (0, 1), "Logistic": (0, 1),
              "LogNormal": (0, 1), "HalfNormal": (0, 1), "HalfCauchy": (None, 0), "HalfStudentT": (None, 1)}


def _normal_rv(var: Any) -> bool:
    """Whether ``var`` is a univariate (untruncated) Normal random variable."""
    from pytensor.tensor.random.basic import NormalRV

    return var is not None and var.owner is not None and isinstance(var.owner.op, NormalRV)


def _noncentring_form(rv: Any, transform: Any) -> str | None:
    """How :func:`noncentred_model` can rewrite the latent ``rv`` with value transform ``transform``: its
    family (``"Normal"``, ``"StudentT"``, ..., ``"GaussianRandomWalk"``), or None where it cannot safely:
    another family, a truncation or censoring (another op), a transform other than the family's default
    (the rewritten site is a Deterministic: a user's transform would be lost), a random walk whose
    initial value or innovations are not Normal."""
    node = rv.owner
    if node is None:
        return None
    from pymc.distributions.transforms import _default_transform

    print_name = getattr(node.op, "_print_name", None)
    family = print_name[0] if print_name else None
    if family in _LOC_SCALE:
        default = _default_transform(node.op, rv)
        same = transform is None if default is None else transform is not None and type(transform) is type(default)
        return family if same else None
    if type(node.op).__name__ == "RandomWalkRV" and transform is None and len(node.inputs) >= 2:
        init, innovations = node.inputs[0], node.inputs[1]
        if _normal_rv(init) and _normal_rv(innovations):
            return "GaussianRandomWalk"
    return None


def _loc_scale_params(rv: Any, form: str) -> list[Any]:
    """The parameters of ``rv`` that non-centring takes out: location and scale (of the initial value and
    of the innovations for a random walk)."""
    node = rv.owner
    if form == "GaussianRandomWalk":
        return [p for var in node.inputs[:2] for p in var.owner.op.dist_params(var.owner)]
    params = list(node.op.dist_params(node))
    return [params[i] for i in _LOC_SCALE[form] if i is not None]


def _noncentred_value(rv: Any, form: str) -> tuple[Any, Any]:
    """``(raw_rv, back)``: the standard variable to sample and ``back(raw)``, ``rv``'s value from it."""
    import pymc as pm
    import pytensor.tensor as pt

    if form == "GaussianRandomWalk":
        # PyMC's RandomWalkRV: x = cumsum(concatenate([init, innovations]), axis=-1), init of shape (1, *batch)
        # and innovations of shape (steps, *batch) along the first axis before it is moved last.
        init, innovations = rv.owner.inputs[0], rv.owner.inputs[1]
        init_mu, init_sigma = init.owner.op.dist_params(init.owner)
        mu, sigma = innovations.owner.op.dist_params(innovations.owner)

        def walk(raw: Any) -> Any:
            steps_first = pt.moveaxis(raw, -1, 0)
            increments = pt.concatenate([init_mu + init_sigma * steps_first[:1], mu + sigma * steps_first[1:]],
                                        axis=0)
            return pt.moveaxis(pt.cumsum(increments, axis=0), 0, -1)

        zero, one = np.zeros((), dtype=rv.dtype), np.ones((), dtype=rv.dtype)
        return pm.Normal.dist(zero, one, size=rv.shape), walk
    params = list(rv.owner.op.dist_params(rv.owner))
    loc, scale = (0.0 if i is None else params[i] for i in _LOC_SCALE[form])
    zero, one = np.zeros((), dtype=rv.dtype), np.ones((), dtype=rv.dtype)  # not float32 literals
    standard = {
        "Normal": lambda: pm.Normal.dist(zero, one, size=rv.shape),
        "LogNormal": lambda: pm.Normal.dist(zero, one, size=rv.shape),
        "StudentT": lambda: pm.StudentT.dist(nu=params[0], mu=zero, sigma=one, size=rv.shape),
        "Laplace": lambda: pm.Laplace.dist(zero, one, size=rv.shape),
        "Cauchy": lambda: pm.Cauchy.dist(zero, one, size=rv.shape),
        "Logistic": lambda: pm.Logistic.dist(zero, one, size=rv.shape),
        "HalfNormal": lambda: pm.HalfNormal.dist(sigma=one, size=rv.shape),
        "HalfCauchy": lambda: pm.HalfCauchy.dist(beta=one, size=rv.shape),
        "HalfStudentT": lambda: pm.HalfStudentT.dist(nu=params[0], sigma=one, size=rv.shape),
    }[form]
    if form == "LogNormal":
        return standard(), lambda raw: pt.exp(loc + scale * raw)
    return standard(), lambda raw: loc + scale * raw


def noncentred_model(model: Any, names: frozenset[str]) -> Any:
    """A copy of ``model`` in which each named latent loc-scale site is sampled standardised and recovered
    as a Deterministic with its name and dims: the same joint density of x and the rest, without the funnel.

    - ``x ~ Normal(mu, sigma)``: ``x_decentered ~ Normal(0, 1)``, ``x = mu + sigma * x_decentered``; likewise
      StudentT(nu, mu, sigma) (``x_decentered ~ StudentT(nu, 0, 1)``), Laplace(mu, b), Cauchy(alpha, beta),
      Logistic(mu, s); the Half- families as ``x = sigma * x_decentered``, ``x_decentered ~ HalfNormal(1)``
      (HalfCauchy(1), HalfStudentT(nu, 1)), log-transformed as x was (the horseshoe's scales);
    - ``x ~ LogNormal(mu, sigma)``, in log space: ``x_decentered ~ Normal(0, 1)``,
      ``x = exp(mu + sigma * x_decentered)``;
    - ``x ~ GaussianRandomWalk(mu, sigma, init_dist=Normal(m0, s0))`` through its innovations:
      ``x_decentered ~ Normal(0, 1)`` of x's shape, ``x = cumsum([m0 + s0 * raw[0], mu + sigma * raw[1:]])``
      along the time axis, i.e. ``concatenate([init, init + cumsum(mu + sigma * raw[1:])])``.

    Rewritten on PyMC's model fgraph (``pymc.model.fgraph``); the user's model is not changed. A site that
    cannot be rewritten safely (:func:`_noncentring_form`) is a :class:`ModelError`."""
    from pymc.distributions.transforms import _default_transform
    from pymc.model.fgraph import (ModelFreeRV, fgraph_from_model, model_deterministic, model_free_rv,
                                   model_from_fgraph)

    from resilient.errors import ModelError

    fgraph, _ = fgraph_from_model(model)
    done = set()
    for node in list(fgraph.toposort()):
        if not isinstance(node.op, ModelFreeRV) or node.op.name not in names:
            continue
        name, rv = node.op.name, node.inputs[0]
        form = _noncentring_form(rv, node.op.transform)
        if form is None:
            raise ModelError(f"Cannot non-centre `{name}`: only an untransformed Normal latent (likewise StudentT, "
                             "Laplace, Cauchy, Logistic), a LogNormal, HalfNormal, HalfCauchy or HalfStudentT "
                             "with its default log transform or a "
                             "GaussianRandomWalk with a Normal initial value can be sampled as loc + scale * a "
                             "standard variable; a truncation or another transform cannot.", site=name)
        raw_name = f"{name}_decentered"
        raw_rv, back = _noncentred_value(rv, form)
        transform = _default_transform(raw_rv.owner.op, raw_rv)  # log for a Half- family's raw, else None
        if transform is None:
            value = raw_rv.type(name=raw_name)
        else:
            value = transform.forward(raw_rv, *raw_rv.owner.inputs).type(name=f"{raw_name}_{transform.name}__")
        raw = model_free_rv(raw_rv, value, transform, raw_name, *node.op.dims)
        fgraph.replace(node.outputs[0], model_deterministic(back(raw), name, *node.op.dims), import_missing=True)
        done.add(name)
    missing = sorted(set(names) - done)
    if missing:
        latent = [v.name for v in model.free_RVs]
        raise ModelError(f"Cannot non-centre {', '.join(f'`{n}`' for n in missing)}: the model has no latent "
                         f"variable of that name. Its latent variables are: {', '.join(latent) or 'none'}.",
                         site=missing[0])
    return model_from_fgraph(fgraph, mutate_fgraph=True)


def _all_infinite(var: Any, sign: int) -> bool:
    """Whether ``var`` is a constant (or a constant broadcast, as a ``shape=`` makes it) whose every
    entry is ``sign * inf``."""
    from pytensor.tensor.basic import NotScalarConstantError, get_underlying_scalar_constant_value
    from pytensor.tensor.variable import TensorConstant

    if isinstance(var, TensorConstant):
        value = np.asarray(var.data, dtype=float)
    else:
        try:
            value = np.asarray(get_underlying_scalar_constant_value(var), dtype=float)
        except (NotScalarConstantError, TypeError, ValueError):
            return False
    return value.size > 0 and bool(np.all(np.isinf(value) & (np.sign(value) == sign)))


def _untruncated_op(rv: Any) -> Any:
    """The random variable op a truncation truncates (``pm.Truncated``'s base, ``normal`` for
    ``pm.TruncatedNormal``), or None when ``rv`` is no truncation. Its inputs are ``rv``'s but the two
    bounds: ``rng, size, *parameters``."""
    node = rv.owner
    if node is None:
        return None
    kind = type(node.op).__name__
    if kind == "TruncatedRV":
        return getattr(node.op, "base_rv_op", None)
    if kind == "TruncatedNormalRV":
        from pytensor.tensor.random.basic import normal

        return normal
    return None


def _unbounded_truncation(rv: Any) -> bool:
    """A ``pm.Truncated`` (or ``pm.TruncatedNormal``) whose bounds are both infinite constants
    (``None`` is an infinite bound to PyMC): it truncates nothing, and PyMC gives it an interval
    transform bounded on neither side, with which ``pm.sample`` stops with ``KeyError: '<name>_interval__'``."""
    if _untruncated_op(rv) is None:
        return False
    inputs = rv.owner.inputs
    return _all_infinite(inputs[-2], -1) and _all_infinite(inputs[-1], 1)


def unbounded_truncations(model: Any) -> list[str]:
    """Names of the latent variables of ``model`` that are truncations with both bounds infinite."""
    return [rv.name for rv in model.free_RVs if _unbounded_truncation(rv)]


def _untruncated_text(rv: Any, named: set) -> str:
    """``Cauchy(mu, 1)`` for ``Truncated(Cauchy(mu, 1), lower=-inf, upper=inf)``."""
    family = _untruncated_op(rv)._print_name[0]
    texts = [_format_input(a, named) for a in list(rv.owner.inputs[2:-2])]
    return f"{family}({', '.join(texts)})"


def without_infinite_truncations(model: Any, fix: bool) -> tuple[Any, dict[str, Any]]:
    """``(model, rewrites)``: a copy of ``model`` in which each latent ``pm.Truncated(base, lower, upper)``
    with both bounds infinite is sampled as it should be, and per site the
    :class:`resilient.rewrites.Rewrite` that says so (empty, and ``model`` itself, when there is none).

    With ``fix`` the truncation, which bounds nothing, is dropped: the site is ``base`` with ``base``'s
    own transform (the same density: the normaliser is log 1 = 0). Without ``fix`` the density is left
    as written and only the transform is replaced by ``base``'s: PyMC's interval transform bounded on
    neither side makes ``pm.sample`` stop with ``KeyError: '<name>_interval__'``. Rewritten on PyMC's
    model fgraph (``pymc.model.fgraph``); the user's model is not changed. A model the fgraph cannot
    hold (initial values set with ``initval=``, a nested model) is a :class:`ModelError` naming the
    site and the fix."""
    names = unbounded_truncations(model)
    if not names:
        return model, {}
    import warnings

    from pymc.distributions.transforms import Interval, _default_transform
    from pymc.model.fgraph import ModelFreeRV, fgraph_from_model, model_free_rv, model_from_fgraph

    from resilient.errors import ModelError
    from resilient.rewrites import Rewrite

    named = set(model.named_vars.values())
    rewrites = {}
    for rv in model.free_RVs:
        if rv.name not in names:
            continue
        before = _describe_rv(rv, named)
        after = _untruncated_text(rv, named)
        lower_none = " (to PyMC a bound of None is an infinite one)"
        reason = ("both bounds are infinite: the truncation bounds nothing, and PyMC gives it an interval "
                  f"transform bounded on neither side, with which pm.sample stops with KeyError: "
                  f"'{rv.name}_interval__'{lower_none}")
        rewrites[rv.name] = Rewrite("drop-infinite-bounds", before, after, reason, ("lower", "upper"))
    if not _fgraph_convertible(model):
        first = names[0]
        fix_text = f"write {first} ~ {rewrites[first].after} without pm.Truncated"
        raise ModelError(
            f"{first} ~ {rewrites[first].before}: {rewrites[first].reason}. Resilient rewrites such a site on "
            "PyMC's model graph, which cannot hold a model with initial values set (initval=) or a nested "
            f"model; {fix_text} (both bounds infinite truncate nothing).", site=first, fix=fix_text)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected variables likely created by GP objects")
        fgraph, _ = fgraph_from_model(model)
    for node in list(fgraph.toposort()):
        if not isinstance(node.op, ModelFreeRV) or node.op.name not in rewrites:
            continue
        name, rv = node.op.name, node.inputs[0]
        base = _untruncated_op(rv).make_node(*rv.owner.inputs[:-2]).default_output()
        transform = node.op.transform
        if isinstance(transform, Interval):  # the truncation's own: the base's default instead
            transform = _default_transform(base.owner.op, base)
        new_rv = base if fix else rv
        if transform is None:
            value = new_rv.type(name=name)
        else:
            value = transform.forward(new_rv, *new_rv.owner.inputs).type(name=f"{name}_{transform.name}__")
        fgraph.replace(node.outputs[0], model_free_rv(new_rv, value, transform, name, *node.op.dims),
                       import_missing=True)
    return model_from_fgraph(fgraph, mutate_fgraph=True), rewrites


def _centred(rv: Any, transform: Any, latents: set) -> bool:
    """Whether the latent ``rv`` is a loc-scale site :func:`noncentred_model` can rewrite whose location or
    scale (for a random walk: of its initial value or of its innovations) depends on another latent."""
    try:
        form = _noncentring_form(rv, transform)
        if form is None:
            return False
        from pytensor.graph.traversal import ancestors

        params = _loc_scale_params(rv, form)
        return any(a in latents and a is not rv for a in ancestors(params, blockers=latents))
    except Exception:  # noqa: BLE001 - an op we do not know is not rewritten: the safe side
        return False


def _native_sites(model: Any) -> dict[str, Site]:
    """Sites of a pm.Model. A latent loc-scale site (Normal, StudentT, Laplace, Cauchy, Logistic, LogNormal,
    HalfNormal, HalfCauchy, HalfStudentT, GaussianRandomWalk) whose location or scale depends on another latent
    is ``noncenterable``:
    :func:`noncentred_model` really rewrites it (when PyMC's model fgraph can hold the model)."""
    convertible = _fgraph_convertible(model)
    latents = set(model.free_RVs)
    named = set(model.named_vars.values())
    site_vars = set(model.free_RVs) | set(model.observed_RVs) | set(model.deterministics)
    sites: dict[str, Site] = {}
    groups = (
        ("latent", model.free_RVs), ("observed", model.observed_RVs),
        ("deterministic", model.deterministics), ("potential", model.potentials),
    )
    for kind, variables in groups:
        for var in variables:
            if kind in ("latent", "observed"):
                try:
                    description = _describe_rv(var, named)
                except Exception:  # noqa: BLE001 - best effort for native models
                    description = type(var.owner.op).__name__
            else:
                description = "Deterministic" if kind == "deterministic" else "Potential"
            try:
                inputs = _parents(var, site_vars)
            except Exception:  # noqa: BLE001
                inputs = ()
            facts: dict[str, Any] = {}
            if kind in ("latent", "observed"):
                try:
                    facts = _facts(var, set(model.free_RVs))
                except Exception:  # noqa: BLE001 - facts are best effort for ops we do not know
                    facts = {}
            centred = kind == "latent" and convertible and _centred(var, model.rvs_to_transforms.get(var), latents)
            sites[var.name] = Site(var.name, kind, None, None, (), False, description, inputs, **facts,
                                   noncenterable=centred)
    return sites
