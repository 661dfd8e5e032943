"""NumPyro's own ``examples/hmm_enum.py`` ``model_1`` (pyro-ppl/numpyro, Apache-2.0), copied as it is, with
small synthetic data in place of the JSB chorales (which NumPyro downloads).

A hidden Markov model: a hidden state ``x[t]`` (``hidden_dim`` values, summed out by enumeration inside
``numpyro.contrib.control_flow.scan``) emits ``data_dim`` 0/1 tones ``y[t]``; ``probs_x`` (transitions) and
``probs_y`` (emissions) are sampled. Raw ``MCMC(NUTS(model_1))`` runs it in float32, jax's default. Under x64
it does not run at all, raw or not: ``x_init`` is int32, the enumerated ``x`` int64, and ``scan`` stops with
"scan body function carry input and carry output must have equal types" (issue #26, item 2). Resilient
therefore runs a native NumPyro model in the precision raw NumPyro would give it.

    import resilient
    from examples.hmm_enum import model_1, simulate
    data = simulate()
    resilient.sample(model_1, data["sequences"], data["lengths"], data["args"])
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.handlers import mask


def model_1(sequences, lengths, args, include_prior=True):
    num_sequences, max_length, data_dim = sequences.shape
    with mask(mask=include_prior):
        probs_x = numpyro.sample(
            "probs_x", dist.Dirichlet(0.9 * jnp.eye(args.hidden_dim) + 0.1).to_event(1)
        )
        probs_y = numpyro.sample(
            "probs_y",
            dist.Beta(0.1, 0.9).expand([args.hidden_dim, data_dim]).to_event(2),
        )

    def transition_fn(carry, y):
        x_prev, t = carry
        with numpyro.plate("sequences", num_sequences, dim=-2):
            with mask(mask=(t < lengths)[..., None]):
                x = numpyro.sample(
                    "x",
                    dist.Categorical(probs_x[x_prev]),
                    infer={"enumerate": "parallel"},
                )
                with numpyro.plate("tones", data_dim, dim=-1):
                    numpyro.sample("y", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=y)
        return (x, t + 1), None

    x_init = jnp.zeros((num_sequences, 1), dtype=jnp.int32)
    # NB swapaxes: we move time dimension of `sequences` to the front to scan over it
    scan(transition_fn, (x_init, 0), jnp.swapaxes(sequences, 0, 1))


def simulate(num_sequences: int = 8, max_length: int = 20, data_dim: int = 6, hidden_dim: int = 4,
             seed: int = 20261128) -> dict:
    """Sequences from a sticky ``hidden_dim``-state chain with fixed, well separated emission probabilities:
    ``{"sequences": (num_sequences, max_length, data_dim) float 0/1, "lengths": (num_sequences,) int,
    "args": SimpleNamespace(hidden_dim=...)}`` (``model_1``'s arguments, as the example's ``main`` passes them;
    sequences of unequal lengths, padded with zeros past their length, as the chorales are)."""
    rng = np.random.default_rng(seed)
    transitions = np.full((hidden_dim, hidden_dim), 0.1 / (hidden_dim - 1)) + 0.8 * np.eye(hidden_dim)
    transitions /= transitions.sum(1, keepdims=True)
    emissions = np.where(rng.uniform(size=(hidden_dim, data_dim)) < 0.4, 0.85, 0.05)
    lengths = rng.integers(max_length // 2, max_length + 1, num_sequences)
    sequences = np.zeros((num_sequences, max_length, data_dim))
    for n in range(num_sequences):
        state = 0
        for t in range(lengths[n]):
            state = rng.choice(hidden_dim, p=transitions[state])
            sequences[n, t] = rng.uniform(size=data_dim) < emissions[state]
    return {"sequences": sequences, "lengths": lengths, "args": SimpleNamespace(hidden_dim=hidden_dim)}
