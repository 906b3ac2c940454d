"""Tests for initlab.data.datasets: the gaussian teacher dataset, preprocessing with training statistics,
and MNIST through load_dataset (skipped when the files are absent)."""

from __future__ import annotations

import re
import socket

import numpy as np
import pytest

from initlab.config import DataConfig, from_dict
from initlab.data import mnist
from initlab.data.datasets import DATASETS, PREPROCESSORS, Dataset, load_dataset
from initlab.errors import ConfigError

from initlab.config import config_hash

from conftest import shared_mnist_dir
from conftest import SMALL_DATA, small_run

MNIST_DIR = shared_mnist_dir()
needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / f.gz_name).is_file() for f in mnist.FILES.values()),
    reason=f"MNIST .gz files not found in {MNIST_DIR} (set INITLAB_DATA_DIR to a folder holding them)",
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def no_downloads(tmp_path_factory, monkeypatch):
    """Never touch the user cache or the public mirrors."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.delenv("INITLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("INITLAB_MNIST_MIRRORS", f"http://127.0.0.1:{closed_port()}/")


def gaussian(**kw) -> DataConfig:
    base = dict(
        dataset="gaussian",
        preprocess="none",
        train_size=300,
        test_size=60,
        input_dim=8,
        num_classes=3,
        probe_size=16,
        teacher_seed=0,
    )
    return DataConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------
# gaussian


def test_gaussian_shapes_and_dtypes():
    ds = load_dataset(gaussian(train_size=120, test_size=30, input_dim=5, num_classes=4), progress=False)
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (120, 5) and ds.x_test.shape == (30, 5)
    assert ds.y_train.shape == (120,) and ds.y_test.shape == (30,)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.num_classes == 4 and ds.input_dim == 5
    assert ds.y_train.min() >= 0 and ds.y_train.max() < 4 and ds.y_test.max() < 4


def test_gaussian_default_sizes():
    cfg = DataConfig(dataset="gaussian", preprocess="none", input_dim=3)
    ds = load_dataset(cfg, progress=False)
    assert len(ds.x_train) == 10_000 and len(ds.x_test) == 2_000


def test_gaussian_is_deterministic_per_teacher_seed():
    a = load_dataset(gaussian(teacher_seed=3), progress=False)
    b = load_dataset(gaussian(teacher_seed=3), progress=False)
    c = load_dataset(gaussian(teacher_seed=4), progress=False)
    for x, y in zip(a[:4], b[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.y_train, c.y_train)


def test_gaussian_labels_cover_the_classes():
    ds = load_dataset(gaussian(num_classes=3), progress=False)
    counts = np.bincount(ds.y_train, minlength=3)
    assert np.all(counts > 0.1 * len(ds.y_train))  # no class nearly empty
    assert len(np.unique(ds.y_test)) == 3


def test_gaussian_inputs_are_standard_normal():
    ds = load_dataset(gaussian(train_size=4000, input_dim=10), progress=False)
    assert ds.x_train.mean() == pytest.approx(0.0, abs=0.02)
    assert np.mean(ds.x_train**2) == pytest.approx(1.0, rel=0.03)  # q⁰ = 1 in expectation


def test_gaussian_test_set_is_held_out():
    ds = load_dataset(gaussian(), progress=False)
    assert not np.any(np.all(ds.x_test[:, None, :] == ds.x_train[None, :, :], axis=-1))


def test_gaussian_teacher_does_not_depend_on_the_dataset_size():
    """The same input row gets the same label whatever train_size is: one fixed teacher per seed."""
    ds = load_dataset(gaussian(), progress=False)  # 300 + 60 examples
    big = load_dataset(gaussian(train_size=360, test_size=1), progress=False)  # 361 examples, same seed
    np.testing.assert_array_equal(big.x_train[300:], ds.x_test)  # the same input rows...
    np.testing.assert_array_equal(big.y_train[300:], ds.y_test)  # ...labelled by the same teacher


# ----------------------------------------------------------------------------------------------
# Preprocessing

RNG = np.random.default_rng(0)
X_TRAIN = (RNG.standard_normal((200, 6)) * [1, 2, 3, 0.5, 1, 4] + [0, 1, -2, 5, 10, 0]).astype(np.float32)
X_TEST = (RNG.standard_normal((40, 6)) * 3 + 7).astype(np.float32)


@pytest.mark.parametrize("name", PREPROCESSORS.all_names())
def test_every_preprocessor_shapes_and_dtype(name):
    tr, te = PREPROCESSORS[name](X_TRAIN.copy(), X_TEST.copy())
    assert tr.shape == X_TRAIN.shape and te.shape == X_TEST.shape
    assert tr.dtype == np.float32 and te.dtype == np.float32
    assert np.all(np.isfinite(tr)) and np.all(np.isfinite(te))


@pytest.mark.parametrize("name", PREPROCESSORS.all_names())
def test_every_preprocessor_uses_training_statistics_only(name):
    """The test set goes through the map fitted on the training set: a training row fed as a
    test row comes out as it does in the training output, and test rows do not affect each other."""
    tr, te = PREPROCESSORS[name](X_TRAIN.copy(), np.concatenate([X_TRAIN[:10], X_TEST]))
    np.testing.assert_allclose(te[:10], tr[:10], rtol=1e-6, atol=1e-6)
    _, te_alone = PREPROCESSORS[name](X_TRAIN.copy(), X_TEST[:5].copy())
    np.testing.assert_allclose(te_alone, te[10:15], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", PREPROCESSORS.all_names())
def test_every_preprocessor_leaves_its_inputs_alone(name):
    tr, te = X_TRAIN.copy(), X_TEST.copy()
    PREPROCESSORS[name](tr, te)
    np.testing.assert_array_equal(tr, X_TRAIN)
    np.testing.assert_array_equal(te, X_TEST)


def test_none_unchanged():
    tr, te = PREPROCESSORS["none"](X_TRAIN.copy(), X_TEST.copy())
    np.testing.assert_array_equal(tr, X_TRAIN)
    np.testing.assert_array_equal(te, X_TEST)


def test_center_exact():
    tr, te = PREPROCESSORS["center"](X_TRAIN.copy(), X_TEST.copy())
    mean = X_TRAIN.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(tr.mean(axis=0, dtype=np.float64), 0.0, atol=1e-5)
    np.testing.assert_allclose(tr, X_TRAIN - mean, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(te, X_TEST - mean, rtol=1e-6, atol=1e-5)  # the TRAIN mean
    assert abs(te.mean()) > 1  # the test set is not re-centred on itself


def test_standardize_exact():
    tr, te = PREPROCESSORS["standardize"](X_TRAIN.copy(), X_TEST.copy())
    mean = X_TRAIN.astype(np.float64).mean(axis=0)
    scale = np.sqrt(np.mean((X_TRAIN - mean) ** 2))  # one global scale
    np.testing.assert_allclose(tr.mean(axis=0, dtype=np.float64), 0.0, atol=1e-5)
    assert np.mean(np.square(tr, dtype=np.float64)) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(tr, (X_TRAIN - mean) / scale, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(te, (X_TEST - mean) / scale, rtol=1e-5, atol=1e-5)
    # one scale, not one per input: the per-input variances keep their ratios
    ratios = tr.var(axis=0) / X_TRAIN.var(axis=0)
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)


def test_standardize_constant_inputs_stay_finite():
    tr, te = PREPROCESSORS["standardize"](np.ones((10, 3), np.float32), np.full((2, 3), 2.0, np.float32))
    np.testing.assert_array_equal(tr, 0.0)
    np.testing.assert_array_equal(te, 1.0)


def test_load_dataset_applies_the_preprocessing():
    raw = load_dataset(gaussian(preprocess="none"), progress=False)
    std = load_dataset(gaussian(preprocess="standardize"), progress=False)
    expected_tr, expected_te = PREPROCESSORS["standardize"](raw.x_train, raw.x_test)
    np.testing.assert_array_equal(std.x_train, expected_tr)
    np.testing.assert_array_equal(std.x_test, expected_te)
    np.testing.assert_array_equal(std.y_train, raw.y_train)
    assert np.mean(np.square(std.x_train, dtype=np.float64)) == pytest.approx(1.0, rel=1e-5)
    assert std.x_train.flags["C_CONTIGUOUS"] and std.x_test.flags["C_CONTIGUOUS"]


def test_probe_size_larger_than_training_set():
    with pytest.raises(ConfigError) as info:
        load_dataset(gaussian(train_size=20, probe_size=21), progress=False)
    msg = str(info.value)
    assert "data.probe_size" in msg and "21" in msg and "20" in msg
    assert len(load_dataset(gaussian(train_size=20, probe_size=20), progress=False).x_train) == 20


def test_unknown_dataset_and_preprocess_messages():
    with pytest.raises(ConfigError) as info:
        load_dataset(gaussian(dataset="cifar"), progress=False)
    msg = str(info.value)
    assert "data.dataset" in msg and "'cifar'" in msg and all(n in msg for n in DATASETS.all_names())
    with pytest.raises(ConfigError) as info:
        load_dataset(gaussian(preprocess="sphere"), progress=False)
    msg = str(info.value)
    assert "data.preprocess" in msg and "'sphere'" in msg and all(n in msg for n in PREPROCESSORS.all_names())


def test_config_data_section_drives_load_dataset():
    cfg = from_dict(
        {"data": {"dataset": "gaussian", "train_size": 50, "test_size": 10, "input_dim": 4, "probe_size": 8}}
    )
    ds = load_dataset(cfg.data, progress=False)
    assert ds.x_train.shape == (50, 4) and ds.x_test.shape == (10, 4)


# ----------------------------------------------------------------------------------------------
# MNIST


@needs_mnist
def test_mnist_subset_raw_pixels():
    cfg = DataConfig(dataset="mnist", preprocess="none", train_size=1000, test_size=500, probe_size=64)
    ds = load_dataset(cfg, data_dir=MNIST_DIR, progress=False)
    assert ds.x_train.shape == (1000, 784) and ds.x_test.shape == (500, 784)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert ds.num_classes == 10 and ds.input_dim == 784
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the well-known first labels
    # pixels are k/255
    np.testing.assert_allclose(ds.x_train[:50] * 255, np.round(ds.x_train[:50] * 255), atol=1e-3)
    assert ds.x_train.mean() == pytest.approx(0.1307, abs=0.01)  # REFERENCE.md statistics


@needs_mnist
def test_mnist_standardized():
    cfg = DataConfig(dataset="mnist", train_size=1000, test_size=500, probe_size=64)
    assert cfg.preprocess == "standardize"
    ds = load_dataset(cfg, data_dir=MNIST_DIR, progress=False)
    assert ds.x_train.shape == (1000, 784)
    np.testing.assert_allclose(ds.x_train.mean(axis=0, dtype=np.float64), 0.0, atol=1e-5)
    assert np.mean(np.square(ds.x_train, dtype=np.float64)) == pytest.approx(1.0, rel=1e-5)
    assert np.all(np.isfinite(ds.x_test))


@needs_mnist
def test_mnist_train_size_beyond_the_dataset():
    with pytest.raises(ConfigError) as info:
        load_dataset(DataConfig(dataset="mnist", train_size=60_001), data_dir=MNIST_DIR, progress=False)
    msg = str(info.value)
    assert "data.train_size" in msg and "60001" in msg and "60000" in msg


def test_whiten_decorrelates_and_matches_zca():
    """ZCA (Bell & Sejnowski 1997): covariance U diag(λ/(λ+eps)) Uᵀ, close to the identity when the
    eigenvalues dwarf eps; the transform is symmetric and uses training statistics only."""
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((6, 6))
    x_train = (rng.standard_normal((20000, 6)) @ mix + 5.0).astype(np.float32)
    x_test = (rng.standard_normal((500, 6)) @ mix + 5.0).astype(np.float32)
    tr, te = PREPROCESSORS["whiten"](x_train, x_test, eps=1e-6)
    np.testing.assert_allclose(np.cov(tr, rowvar=False, bias=True), np.eye(6), atol=2e-3)
    np.testing.assert_allclose(tr.mean(axis=0), 0.0, atol=1e-4)
    # Exactly the symmetric C^(-1/2) of the training covariance.
    centred = x_train.astype(np.float64) - x_train.mean(axis=0, dtype=np.float64)
    lam, u = np.linalg.eigh(centred.T @ centred / len(centred))
    zca = u @ np.diag(1 / np.sqrt(lam + 1e-6)) @ u.T
    np.testing.assert_allclose(te, (x_test - x_train.mean(axis=0)) @ zca, rtol=1e-3, atol=1e-3)
    # A large eps damps the low-variance directions: per-direction variance λ/(λ+eps).
    damped, _ = PREPROCESSORS["whiten"](x_train, x_test, eps=float(np.median(lam)))
    out_lam = np.linalg.eigvalsh(np.cov(damped, rowvar=False, bias=True))
    np.testing.assert_allclose(np.sort(out_lam), np.sort(lam / (lam + np.median(lam))), atol=2e-3)


def test_whiten_eps_comes_from_the_config():
    raw = load_dataset(gaussian(preprocess="none"), progress=False)
    small = load_dataset(DataConfig(**{**gaussian(preprocess="whiten").__dict__, "whiten_eps": 1e-4}), progress=False)
    large = load_dataset(DataConfig(**{**gaussian(preprocess="whiten").__dict__, "whiten_eps": 10.0}), progress=False)
    assert raw.x_train.var() > large.x_train.var()
    assert small.x_train.var() == pytest.approx(1.0, abs=0.05)
    assert large.x_train.var() < 0.2


def test_whiten_eps_only_with_whiten():
    with pytest.raises(ConfigError, match="data.whiten_eps: 0.01 has no effect with data.preprocess: 'standardize'"):
        from_dict({"data": {"whiten_eps": 0.01}})


def test_minmax_maps_each_training_input_onto_the_range():
    rng = np.random.default_rng(0)
    x_train = np.concatenate([rng.uniform(0, 255, (100, 3)), np.full((100, 1), 7.0)], axis=1).astype(np.float32)
    x_test = rng.uniform(0, 255, (20, 4)).astype(np.float32)
    a, b = PREPROCESSORS["minmax"](x_train, x_test, (-0.5, 0.5))
    np.testing.assert_allclose(a[:, :3].min(axis=0), -0.5, atol=1e-6)
    np.testing.assert_allclose(a[:, :3].max(axis=0), 0.5, atol=1e-6)
    np.testing.assert_array_equal(a[:, 3], 0.0)  # a constant input goes to the middle
    lo, hi = x_train[:, 0].min(), x_train[:, 0].max()
    np.testing.assert_allclose(b[:, 0], -0.5 + (x_test[:, 0] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)  # train's map


def test_minmax_on_mnist_through_the_config(mnist_dir):
    cfg = from_dict({"data": {"preprocess": "minmax", "range": [0.1, 0.9], "train_size": 1000, "test_size": 100}})
    ds = load_dataset(cfg.data, mnist_dir, progress=False)
    assert ds.x_train.min() == pytest.approx(0.1) and ds.x_train.max() == pytest.approx(0.9)
    assert np.all(ds.x_train[:, 0] == pytest.approx(0.5))  # the corner pixel is 0 on every training image


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"preprocess": "minmax", "range": [0.5, -0.5]},
            "data.range: [0.5, -0.5] is not a range [low, high] with low < high",
        ),
        ({"preprocess": "minmax", "range": [1.0]}, "data.range: [1.0] is not a range"),
        ({"range": [-1, 1]}, "data.range: (-1.0, 1.0) has no effect with data.preprocess: 'standardize'"),
    ],
)
def test_bad_ranges_are_one_line_errors(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict({"data": data})


def test_input_scale_multiplies_the_inputs():
    base = load_dataset(from_dict(small_run("s")).data)
    scaled = load_dataset(from_dict({**small_run("s"), "data": {**SMALL_DATA, "input_scale": 0.25}}).data)
    np.testing.assert_array_equal(scaled.x_train, base.x_train * np.float32(0.25))
    assert config_hash(from_dict(small_run("s"))) == config_hash(
        from_dict({**small_run("s"), "data": {**SMALL_DATA, "input_scale": 1.0}})
    )
