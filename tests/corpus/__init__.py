"""A drop-in corpus (issue #16, item 7): PyMC models in the shapes of PyMC's docs and NumPyro models in
the shapes of NumPyro's examples, each with its own synthetic data, run raw and through
``resilient.sample`` by ``tests/test_corpus.py``. What fails today is recorded in ``FINDINGS.md``."""
