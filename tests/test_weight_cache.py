"""Layers keep the Winograd form's weight transform between calls
(numbaconv._weight_cache): the same results as the functional call, a transform only
when the weight's bits change (in place or by assignment), and the NaN/Inf rule."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbaconv
from numbaconv import _weight_cache
from numbaconv._conv_arrays import conv_arrays
from _reference import conv_reference
from conftest import assert_close, forcing_winograd
from test_paths import winograd_configurations

# A shape whose float32 layer takes the Winograd form (checked in the first test);
# in float64, whose vectors hold half as many channels, the register blocks take it,
# so those tests force the Winograd form.
SHAPE = (1, 16, 40, 40)


def _layer(dtype=np.float32, **kw):
    return numbaconv.Conv2d(16, 16, 3, padding=1, rng=0, dtype=dtype, **kw)


@pytest.fixture
def transforms(monkeypatch):
    """Counts the weight transforms the cache makes."""
    made = []
    real = _weight_cache.transform_weight

    def counting(w6, threads):
        made.append(w6.shape)
        return real(w6, threads)

    monkeypatch.setattr(_weight_cache, "transform_weight", counting)
    return made


def _reference(layer, x):
    return conv_reference(x, layer.weight, layer.bias, padding=1)


def test_layer_takes_winograd_and_caches_its_transform(rng, transforms):
    layer = _layer()
    explanation = layer.explain(SHAPE)
    assert explanation.choice == "im2col"
    assert explanation.forms["im2col"][0][0] == "winograd"
    x = rng.standard_normal(SHAPE).astype(np.float32)
    first = layer(x)
    second = layer(x)
    assert len(transforms) == 1
    np.testing.assert_array_equal(first, second)
    assert_close(first, _reference(layer, x), np.float32)
    functional = numbaconv.conv2d(x, layer.weight, layer.bias, padding=1, method="im2col")
    assert_close(first, functional, np.float32)


@pytest.mark.parametrize("change", ["one element", "sign of zero", "assigned", "dtype"])
def test_a_changed_weight_is_transformed_again(rng, transforms, change):
    layer = _layer()
    x = rng.standard_normal(SHAPE).astype(np.float32)
    before = layer(x)
    if change == "one element":
        layer.weight[5, 3, 2, 0] += 0.5
    elif change == "sign of zero":
        # Equal as floats, different bits: a cache comparing values would keep it.
        layer.weight[0, 0, 0, 0] = 0.0
        layer(x)
        layer.weight[0, 0, 0, 0] = -0.0
    elif change == "assigned":
        layer.weight = rng.standard_normal(layer.weight.shape).astype(np.float32)
    else:
        layer.weight = layer.weight.astype(np.float64)
    with forcing_winograd():
        after = layer(x)
    expected_transforms = {"sign of zero": 3}.get(change, 2)
    assert len(transforms) == expected_transforms
    assert_close(after, _reference(layer, x), after.dtype)
    if change != "sign of zero":
        assert not np.allclose(after, before)


def test_the_cache_does_not_keep_the_users_weight(rng, transforms):
    """The cache compares against its own copy: the user's array may change freely."""
    layer = _layer()
    x = rng.standard_normal(SHAPE).astype(np.float32)
    layer(x)
    weight = layer.weight
    weight *= 2.0  # in place, through another name
    assert_close(layer(x), _reference(layer, x), np.float32)
    assert len(transforms) == 2


def test_float64_layer_caches_too(rng, transforms):
    layer = _layer(dtype=np.float64)
    x = rng.standard_normal(SHAPE)
    with forcing_winograd():
        y = layer(x)
        layer(x)
    assert y.dtype == np.float64 and len(transforms) == 1
    assert_close(y, _reference(layer, x), np.float64)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_weight_keeps_the_nan_rule(rng, value):
    """A NaN or Inf weight: the cached transform says so, and the call runs a form that
    spreads it only to its output channel (as the functional call does)."""
    layer = _layer(bias=False)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    layer(x)
    layer.weight[4, 2, 1, 1] = value
    y = layer(x)
    y_again = layer(x)
    expected = numbaconv.conv2d(x, layer.weight, None, padding=1, method="direct")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isnan(y_again), np.isnan(expected))
    finite = np.isfinite(expected)
    assert_close(y[finite], expected[finite], np.float32)
    assert np.isfinite(np.delete(y, 4, axis=1)).all()


def test_nonfinite_input_with_cached_weight(rng):
    layer = _layer(bias=False)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    layer(x)
    x[0, 3, 10, 10] = np.nan
    y = layer(x)
    ref = conv_reference(np.nan_to_num(x, nan=1e30), layer.weight, None, padding=1)
    touched = np.abs(ref) > 1e20
    np.testing.assert_array_equal(np.isnan(y), touched)


def test_clear_gives_the_memory_back(rng, transforms):
    layer = _layer()
    x = rng.standard_normal(SHAPE).astype(np.float32)
    layer(x)
    layer._weight_cache.clear()
    layer(x)
    assert len(transforms) == 2


def test_forms_without_a_transform_cache_nothing(rng, transforms):
    """A layer off the Winograd form (a 1x1 layer) keeps no copy of its weight."""
    layer = numbaconv.Conv2d(16, 32, 1, rng=0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    assert_close(layer(x), conv_reference(x, layer.weight, layer.bias), np.float32)
    assert transforms == [] and layer._weight_cache._entry is None


def test_layer_explain_counts_the_cached_transform():
    """The layer's Winograd estimate is below the function's (no transform per call)."""
    layer = _layer()
    layer_estimate = dict((f[0], f[1]) for f in layer.explain(SHAPE).forms["im2col"])
    function = numbaconv.explain(SHAPE, layer.weight.shape, padding=1)
    function_estimate = dict((f[0], f[1]) for f in function.forms["im2col"])
    assert layer_estimate["winograd"] < function_estimate["winograd"]
    assert layer_estimate["columns"] == function_estimate["columns"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=winograd_configurations(), seed=st.integers(0, 2**31),
       layout=st.sampled_from(["channels_first", "channels_last"]))
def test_cached_transform_on_random_configurations(cfg, seed, layout):
    """The Winograd form with a cache, over 2D/3D, groups, dilation, padding forms and
    modes, both dtypes and both layouts: the cached call equals the first, and a
    weight changed in place gives the reference's new result."""
    rng = np.random.default_rng(seed)
    c_in = 16 * cfg["groups"]
    x = rng.standard_normal((cfg["n"], c_in) + cfg["spatial"]).astype(cfg["dtype"])
    d = len(cfg["spatial"])
    moved = x if layout == "channels_first" else np.moveaxis(x, 1, -1)
    w = rng.standard_normal((cfg["c_out"], 16) + cfg["kernel"]).astype(cfg["dtype"])
    b = rng.standard_normal(cfg["c_out"]).astype(cfg["dtype"]) if cfg["bias"] else None
    kw = dict(padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    cache = _weight_cache.WeightCache()

    def call():
        y = conv_arrays(moved, w, b, 1, cfg["padding"], cfg["dilation"], cfg["groups"],
                        cfg["mode"], "im2col", None, layout, weight_cache=cache)
        return y if layout == "channels_first" else np.moveaxis(y, -1, y.ndim - d - 1)

    with forcing_winograd() as calls:
        first, second = call(), call()
        w[rng.integers(cfg["c_out"]), rng.integers(16)] *= -3.0
        changed = call()
    assert calls == [True, True, True]
    np.testing.assert_array_equal(first, second)
    assert_close(changed, conv_reference(x, w, b, **kw, padding_mode=cfg["mode"]),
                 cfg["dtype"])
