"""Models from NumPyro's examples (github.com/pyro-ppl/numpyro, ``examples/``), written as the example
files write them: the same priors, likelihoods, plates, enumeration and parameterisation. Only the data
differ where an example downloads a data set: see :mod:`examples.gallery.data`.

Each builder returns ``(model_fn, args)``: the model function and its positional data arguments (NumPy
arrays). Arguments an example passes as options (``args.hidden_dim``, ``dim=10``) are fixed by a closure.
"""

from __future__ import annotations

import numpy as np

from examples.gallery import data as D


def stochastic_volatility():
    """examples/stochastic_volatility.py: sigma ~ Exponential(50), s ~ GaussianRandomWalk(sigma, T),
    nu ~ Exponential(0.1), r ~ StudentT(nu, 0, exp(s)); 300 simulated returns instead of the S&P 500 set."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model(returns):
        step_size = numpyro.sample("sigma", dist.Exponential(50.0))
        s = numpyro.sample("s", dist.GaussianRandomWalk(scale=step_size, num_steps=jnp.shape(returns)[0]))
        nu = numpyro.sample("nu", dist.Exponential(0.1))
        return numpyro.sample("r", dist.StudentT(df=nu, loc=0.0, scale=jnp.exp(s)), obs=returns)

    return model, (D.sv_returns(),)


def horseshoe_regression():
    """examples/horseshoe_regression.py (model_normal_likelihood): lambdas, tau ~ HalfCauchy(1),
    unscaled_betas ~ Normal(0, 1), betas = tau lambdas unscaled_betas, prec_obs ~ Gamma(3, 1);
    get_data(N=100, D_X=32) as in main()."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model_normal_likelihood(X, Y):
        D_X = X.shape[1]
        lambdas = numpyro.sample("lambdas", dist.HalfCauchy(jnp.ones(D_X)))
        tau = numpyro.sample("tau", dist.HalfCauchy(jnp.ones(1)))
        unscaled_betas = numpyro.sample("unscaled_betas", dist.Normal(0.0, jnp.ones(D_X)))
        scaled_betas = numpyro.deterministic("betas", tau * lambdas * unscaled_betas)
        mean_function = jnp.dot(X, scaled_betas)
        prec_obs = numpyro.sample("prec_obs", dist.Gamma(3.0, 1.0))
        sigma_obs = 1.0 / jnp.sqrt(prec_obs)
        numpyro.sample("Y", dist.Normal(mean_function, sigma_obs), obs=Y)

    return model_normal_likelihood, D.horseshoe()


def dawid_skene():
    """examples/annotation.py (dawid_skene): beta ~ Dirichlet(1) per annotator and class, pi ~ Dirichlet(1),
    item class c ~ Categorical(pi) enumerated in parallel, y ~ Categorical(beta[positions, c]);
    the example's data (Dawid & Skene 1979, Table 1)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.ops.indexing import Vindex

    def model(positions, annotations):
        num_annotators = int(np.max(positions)) + 1
        num_classes = int(np.max(annotations)) + 1
        num_items, num_positions = annotations.shape

        with numpyro.plate("annotator", num_annotators, dim=-2):
            with numpyro.plate("class", num_classes):
                beta = numpyro.sample("beta", dist.Dirichlet(jnp.ones(num_classes)))

        pi = numpyro.sample("pi", dist.Dirichlet(jnp.ones(num_classes)))

        with numpyro.plate("item", num_items, dim=-2):
            c = numpyro.sample("c", dist.Categorical(pi), infer={"enumerate": "parallel"})
            with numpyro.plate("position", num_positions):
                numpyro.sample("y", dist.Categorical(Vindex(beta)[positions, c, :]), obs=annotations)

    return model, (D.ANNOTATION_POSITIONS, D.ANNOTATIONS)


def hmm_enum(hidden_dim: int = 3):
    """examples/hmm_enum.py (model_1): probs_x ~ Dirichlet(0.9 I + 0.1) rows, probs_y ~ Beta(0.1, 0.9),
    hidden x enumerated in parallel inside ``scan``, masked by sequence length, Bernoulli tones;
    8 simulated sequences of 30 steps x 6 tones, hidden_dim 3 (the example: JSB chorales, 88 tones, 16)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.control_flow import scan
    from numpyro.handlers import mask

    def model_1(sequences, lengths, include_prior=True):
        num_sequences, max_length, data_dim = sequences.shape
        with mask(mask=include_prior):
            probs_x = numpyro.sample("probs_x", dist.Dirichlet(0.9 * jnp.eye(hidden_dim) + 0.1).to_event(1))
            probs_y = numpyro.sample("probs_y", dist.Beta(0.1, 0.9).expand([hidden_dim, data_dim]).to_event(2))

        def transition_fn(carry, y):
            x_prev, t = carry
            with numpyro.plate("sequences", num_sequences, dim=-2):
                with mask(mask=(t < lengths)[..., None]):
                    x = numpyro.sample("x", dist.Categorical(probs_x[x_prev]), infer={"enumerate": "parallel"})
                    with numpyro.plate("tones", data_dim, dim=-1):
                        numpyro.sample("y", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=y)
            return (x, t + 1), None

        x_init = jnp.zeros((num_sequences, 1), dtype=jnp.int32)
        scan(transition_fn, (x_init, 0), jnp.swapaxes(sequences, 0, 1))

    return model_1, D.hmm_sequences(hidden_dim=hidden_dim)


def gp():
    """examples/gp.py: kernel_var, kernel_noise, kernel_length ~ LogNormal(0, 10), squared-exponential
    kernel plus noise and jitter, MultivariateNormal likelihood; get_data(N=25) as the example's default."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def kernel(X, Z, var, length, noise, jitter=1.0e-6, include_noise=True):
        deltaXsq = jnp.power((X[:, None] - Z) / length, 2.0)
        k = var * jnp.exp(-0.5 * deltaXsq)
        if include_noise:
            k += (noise + jitter) * jnp.eye(X.shape[0])
        return k

    def model(X, Y):
        var = numpyro.sample("kernel_var", dist.LogNormal(0.0, 10.0))
        noise = numpyro.sample("kernel_noise", dist.LogNormal(0.0, 10.0))
        length = numpyro.sample("kernel_length", dist.LogNormal(0.0, 10.0))
        k = kernel(X, X, var, length, noise)
        numpyro.sample("Y", dist.MultivariateNormal(loc=jnp.zeros(X.shape[0]), covariance_matrix=k), obs=Y)

    return model, D.gp_numpyro()


def baseball_partially_pooled():
    """examples/baseball.py (partially_pooled): m ~ Uniform(0, 1), kappa ~ Pareto(1, 1.5),
    phi ~ Beta(m kappa, (1 - m) kappa), Binomial; the Efron-Morris data."""
    import numpyro
    import numpyro.distributions as dist

    def partially_pooled(at_bats, hits=None):
        m = numpyro.sample("m", dist.Uniform(0, 1))
        kappa = numpyro.sample("kappa", dist.Pareto(1, 1.5))
        num_players = at_bats.shape[0]
        with numpyro.plate("num_players", num_players):
            phi = numpyro.sample("phi", dist.Beta(m * kappa, (1 - m) * kappa))
            return numpyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)

    return partially_pooled, (D.BASEBALL_AT_BATS, D.BASEBALL_HITS)


def baseball_logit():
    """examples/baseball.py (partially_pooled_with_logit, centred): loc ~ Normal(-1, 1),
    scale ~ HalfCauchy(1), alpha ~ Normal(loc, scale), Binomial(logits=alpha); the Efron-Morris data."""
    import numpyro
    import numpyro.distributions as dist

    def partially_pooled_with_logit(at_bats, hits=None):
        loc = numpyro.sample("loc", dist.Normal(-1, 1))
        scale = numpyro.sample("scale", dist.HalfCauchy(1))
        num_players = at_bats.shape[0]
        with numpyro.plate("num_players", num_players):
            alpha = numpyro.sample("alpha", dist.Normal(loc, scale))
            return numpyro.sample("obs", dist.Binomial(at_bats, logits=alpha), obs=hits)

    return partially_pooled_with_logit, (D.BASEBALL_AT_BATS, D.BASEBALL_HITS)


def ucbadmit():
    """examples/ucbadmit.py (glmm): v_mu ~ Normal(0, [4, 1]), sigma ~ HalfNormal(1) (2),
    L_Rho ~ LKJCholesky(2, 2), non-centred department effects z ~ Normal(0, 1), Binomial(logits);
    the UCBadmit table."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def glmm(dept, male, applications, admit=None):
        v_mu = numpyro.sample("v_mu", dist.Normal(0, jnp.array([4.0, 1.0])))
        sigma = numpyro.sample("sigma", dist.HalfNormal(jnp.ones(2)))
        L_Rho = numpyro.sample("L_Rho", dist.LKJCholesky(2, concentration=2))
        scale_tril = sigma[..., jnp.newaxis] * L_Rho
        num_dept = len(np.unique(dept))
        z = numpyro.sample("z", dist.Normal(jnp.zeros((num_dept, 2)), 1))
        v = jnp.dot(scale_tril, z.T).T
        logits = v_mu[0] + v[dept, 0] + (v_mu[1] + v[dept, 1]) * male
        numpyro.sample("admit", dist.Binomial(applications, logits=logits), obs=admit)

    return glmm, (D.UCB_DEPT, D.UCB_MALE, D.UCB_APPLICATIONS, D.UCB_ADMIT)


def funnel(dim: int = 10):
    """examples/funnel.py (model, centred; the example also runs a LocScaleReparam version):
    y ~ Normal(0, 3), x ~ Normal(0, exp(y / 2)) in dim - 1 = 9 dimensions. No data."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model():
        y = numpyro.sample("y", dist.Normal(0, 3))
        numpyro.sample("x", dist.Normal(jnp.zeros(dim - 1), jnp.exp(y / 2)))

    return model, ()


def ar2():
    """examples/ar2.py (ar2_scan): alpha_1, alpha_2, const ~ Normal(0, 1), sigma ~ HalfNormal(1), the
    AR(2) transition in ``scan`` conditioned on y[2:]; main()'s data: y = sin(t) + 0.1 N(0, 1), t = 0..141,
    passed as a jax array as main() passes it (the model indexes it with a traced step inside ``scan``)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.contrib.control_flow import scan

    def ar2_scan(y):
        alpha_1 = numpyro.sample("alpha_1", dist.Normal(0, 1))
        alpha_2 = numpyro.sample("alpha_2", dist.Normal(0, 1))
        const = numpyro.sample("const", dist.Normal(0, 1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1))

        def transition(carry, _):
            y_prev, y_prev_prev = carry
            m_t = const + alpha_1 * y_prev + alpha_2 * y_prev_prev
            y_t = numpyro.sample("y", dist.Normal(m_t, sigma))
            return (y_t, y_prev), m_t

        timesteps = jnp.arange(y.shape[0] - 2)
        init = (y[1], y[0])
        with numpyro.handlers.condition(data={"y": y[2:]}):
            _, mu = scan(transition, init, timesteps)
        numpyro.deterministic("mu", mu)

    t = np.arange(142)
    y = jnp.asarray(np.sin(t) + 0.1 * np.random.default_rng(0).normal(size=t.size))
    return ar2_scan, (y,)


def zero_inflated_poisson():
    """examples/zero_inflated_poisson.py (model): b1, b2 ~ Normal(0, 1) (D_X), gate = expit(X b1),
    rate = exp(X b2), ZeroInflatedPoisson; 250 simulated rows instead of the fishing data."""
    import jax.numpy as jnp
    import jax.scipy as jsp
    import numpyro
    import numpyro.distributions as dist

    def model(X, Y):
        D_X = X.shape[1]
        b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0).expand([D_X]).to_event(1))
        b2 = numpyro.sample("b2", dist.Normal(0.0, 1.0).expand([D_X]).to_event(1))
        q = jsp.special.expit(jnp.dot(X, b1[:, None])).reshape(-1)
        lam = jnp.exp(jnp.dot(X, b2[:, None]).reshape(-1))
        with numpyro.plate("obs", X.shape[0]):
            numpyro.sample("Y", dist.ZeroInflatedPoisson(gate=q, rate=lam), obs=Y)

    return model, D.zip_data()


def toy_mixture():
    """examples/toy_mixture_model_discrete_enumeration.py (model): p_A ~ Beta(1, 1), p_B, p_C ~ Beta(1, 1)
    (2 each), observed A, hidden B ~ Bernoulli(p_B[A]) enumerated in parallel, observed C ~ Bernoulli(p_C[B]);
    500 observations from the example's generate_data (the example fits it by SVI; here by NUTS)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.ops.indexing import Vindex

    def model(A_obs, C_obs):
        num_obs = A_obs.shape[0]
        p_A = numpyro.sample("p_A", dist.Beta(1, 1))
        p_B = numpyro.sample("p_B", dist.Beta(jnp.ones(2), jnp.ones(2)).to_event(1))
        p_C = numpyro.sample("p_C", dist.Beta(jnp.ones(2), jnp.ones(2)).to_event(1))
        with numpyro.plate("data_plate", num_obs):
            A = numpyro.sample("A", dist.Bernoulli(p_A), obs=A_obs)
            B = numpyro.sample("B", dist.Bernoulli(Vindex(p_B)[A]), infer={"enumerate": "parallel"})
            numpyro.sample("C", dist.Bernoulli(Vindex(p_C)[B]), obs=C_obs)

    d = D.toy_mixture()
    return model, (d["A"], d["C"])
