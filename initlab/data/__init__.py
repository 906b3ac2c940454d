"""Datasets: the registry of datasets and preprocessors (``datasets``) and MNIST's verified download and
reading (``mnist``). numpy only: no JAX, nothing of initlab above ``errors`` and ``registry``."""
