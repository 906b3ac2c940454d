"""Datasets and input preprocessing, one registry each.

A dataset arrives as float32 arrays ``(n, input_dim)`` with int32 labels. Preprocessing statistics
come from the training set only and are applied unchanged to the test set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from initlab.errors import ConfigError
from initlab.registry import Registry

if TYPE_CHECKING:  # a type only: data is below config and never imports it (pyproject.toml's contract)
    from initlab.config import DataConfig


class Dataset(NamedTuple):
    """Training and test arrays, ready for the model."""

    x_train: np.ndarray  # (n_train, input_dim) float32
    y_train: np.ndarray  # (n_train,) int32
    x_test: np.ndarray  # (n_test, input_dim) float32
    y_test: np.ndarray  # (n_test,) int32
    num_classes: int

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]


def _mnist(cfg: DataConfig, data_dir: str | Path | None, progress: bool, download: bool = True) -> Dataset:
    """MNIST (LeCun et al. 1998), pixels scaled to [0, 1], images flattened to 784 inputs."""
    from initlab.data import mnist

    arrays = mnist.load(data_dir, download=download, progress=progress)
    n_train = cfg.train_size or len(arrays.train_labels)
    n_test = cfg.test_size or len(arrays.test_labels)
    for key, n, have in (
        ("data.train_size", n_train, len(arrays.train_labels)),
        ("data.test_size", n_test, len(arrays.test_labels)),
    ):
        if n > have:
            raise ConfigError(f"{key}: {n} is more than MNIST has ({have})")

    def flat(images, n):
        return images[:n].reshape(n, -1).astype(np.float32) / 255.0

    return Dataset(
        flat(arrays.train_images, n_train),
        arrays.train_labels[:n_train].astype(np.int32),
        flat(arrays.test_images, n_test),
        arrays.test_labels[:n_test].astype(np.int32),
        10,
    )


def _gaussian(cfg: DataConfig, data_dir: str | Path | None, progress: bool, download: bool = True) -> Dataset:
    """i.i.d. N(0, 1) inputs labelled by a fixed random teacher (one tanh hidden layer of 64 units,
    argmax over ``num_classes`` outputs): a controlled input for tests and theory checks, where the
    input's second moment q⁰ = 1 exactly in expectation."""
    n_train = cfg.train_size or 10_000
    n_test = cfg.test_size or 2_000
    d, c = cfg.input_dim, cfg.num_classes
    # Separate streams: the teacher must not change when the dataset's size does.
    teacher = np.random.default_rng([cfg.teacher_seed, 0])
    w1 = teacher.standard_normal((d, 64)).astype(np.float32) / np.sqrt(d)
    w2 = teacher.standard_normal((64, c)).astype(np.float32) / np.sqrt(64)
    x = np.random.default_rng([cfg.teacher_seed, 1]).standard_normal((n_train + n_test, d), dtype=np.float32)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int32)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], c)


# An entry: (config, data directory, show download progress, may download) -> Dataset.
DATASETS: Registry[Callable[[DataConfig, str | Path | None, bool, bool], Dataset]] = Registry(
    "dataset", {"mnist": _mnist, "gaussian": _gaussian}
)


def _none(x_train, x_test):
    return x_train, x_test


def _center(x_train, x_test):
    """Subtract each input's training-set mean: "the average of each input variable over the
    training set should be close to zero" (LeCun et al. 1998, Efficient BackProp, §4.3)."""
    mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)  # (input_dim,)
    return x_train - mean, x_test - mean


def _standardize(x_train, x_test):
    """Center each input, then divide by one global scale so the inputs' variance is 1 on average
    (Efficient BackProp §4.3). One scale rather than one per pixel: MNIST's border pixels are
    almost constant, and dividing by their tiny standard deviations would blow them up. With this
    choice the input's mean second moment q⁰ (mean-field theory's starting point) is exactly 1."""
    x_train, x_test = _center(x_train, x_test)
    scale = np.float32(np.sqrt(np.mean(np.square(x_train, dtype=np.float64))))
    if scale == 0:
        return x_train, x_test
    return x_train / scale, x_test / scale


def _whiten(x_train, x_test, eps: float = 0.1):
    """ZCA whitening (Bell & Sejnowski 1997; the decorrelation step of Efficient BackProp §4.3):
    center, then multiply by C^(-1/2) = U diag(1/sqrt(λ + eps)) Uᵀ from the training covariance
    C = U diag(λ) Uᵀ. The result has covariance U diag(λ/(λ + eps)) Uᵀ: directions with variance well
    above ``eps`` get unit variance and are decorrelated; near-constant ones (MNIST's border pixels)
    are damped instead of blown up. ZCA, unlike PCA whitening, stays closest to the original inputs."""
    x_train, x_test = _center(x_train, x_test)
    x64 = x_train.astype(np.float64)
    cov = x64.T @ x64 / len(x64)  # (input_dim, input_dim)
    lam, u = np.linalg.eigh(cov)
    w = ((u / np.sqrt(np.maximum(lam, 0.0) + eps)) @ u.T).astype(np.float32)
    return x_train @ w, x_test @ w


def _minmax(x_train, x_test, bounds: tuple[float, float] = (-0.5, 0.5)):
    """Map each input linearly from its training-set [min, max] onto ``bounds`` (Efficient BackProp
    §4.3: keep the inputs inside the nonlinearity's quasilinear range, e.g. [-0.5, 0.5] for tanh).
    An input constant on the training set (MNIST's border pixels) goes to the middle of the range;
    test inputs outside the training range land outside ``bounds`` (no clipping)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    x_min, x_max = x_train.min(axis=0), x_train.max(axis=0)
    span = x_max - x_min
    scale = np.where(span > 0, (hi - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    offset = np.where(span > 0, lo - x_min * scale, (lo + hi) / 2).astype(np.float32)
    return x_train * scale + offset, x_test * scale + offset


PREPROCESSORS: Registry[Callable[..., tuple[np.ndarray, np.ndarray]]] = Registry(
    "preprocessing",
    {"none": _none, "center": _center, "standardize": _standardize, "whiten": _whiten, "minmax": _minmax},
)
# Preprocessors' settings in DataConfig, by entry.
PREPROCESS_ARGS = {"whiten": {"eps": "whiten_eps"}, "minmax": {"bounds": "range"}}


def load_dataset(
    cfg: DataConfig, data_dir: str | Path | None = None, progress: bool = True, download: bool = True
) -> Dataset:
    """The configured dataset, subset and preprocessed; the probe batch is its first
    ``cfg.probe_size`` training examples. ``download=False``: an InitlabError instead of a
    download when the files are not there yet."""
    ds = DATASETS.get(cfg.dataset, "data.dataset")(cfg, data_dir, progress, download)
    kwargs = {arg: getattr(cfg, name) for arg, name in PREPROCESS_ARGS.get(cfg.preprocess, {}).items()}
    x_train, x_test = PREPROCESSORS.get(cfg.preprocess, "data.preprocess")(ds.x_train, ds.x_test, **kwargs)
    if cfg.input_scale != 1.0:
        x_train, x_test = x_train * cfg.input_scale, x_test * cfg.input_scale
    if cfg.probe_size > len(x_train):
        raise ConfigError(f"data.probe_size: {cfg.probe_size} is more than the {len(x_train)} training examples")
    return ds._replace(
        x_train=np.ascontiguousarray(x_train, np.float32), x_test=np.ascontiguousarray(x_test, np.float32)
    )
