"""The contract every registered module keeps, parametrized over attn_lib.available() and each
module's VARIANTS: a new chapter's module is covered here with no new test code."""

from __future__ import annotations

import copy
import inspect
import io
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import attn_lib
from conftest import build, randomize_

B, C, H, W = 2, 16, 7, 9          # odd and non-square on purpose


def assert_close_to_scale(actual, expected, rtol):
    """float32 results of two correct computations differ by rounding relative to the output's
    largest entries, not to each entry: compare with an absolute tolerance at that scale."""
    scale = expected.abs().max().clamp(min=1.0).item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


def make(case, channels=C, height=H, width=W, seed=0):
    name, variant = case
    return randomize_(build(name, channels, height, width, variant=variant), seed=seed)


def expected_channels(module, channels):
    return getattr(module, "out_channels", channels)


def expected_shape(module, batch, channels, height, width):
    """(B, out_channels, H, W) for a block; (B, num_classes) for a classifier head, a module
    whose class says OUTPUT = "logits" (CSRA): it pools the map away."""
    if getattr(module, "OUTPUT", "map") == "logits":
        return (batch, module.num_classes)
    return (batch, expected_channels(module, channels), height, width)


def test_output_shape(case):
    m = make(case).eval()
    y = m(torch.randn(B, C, H, W))
    assert tuple(y.shape) == expected_shape(m, B, C, H, W)


@pytest.mark.parametrize("hw", [(1, 1), (33, 15), (4, 32)])
def test_other_sizes_work_or_are_refused_clearly(case, hw):
    """No module hard-codes H or W: other sizes work, or are refused with a ValueError that
    names the module and the shape received."""
    m = make(case, height=hw[0], width=hw[1]).eval()
    x = torch.randn(B, C, *hw)
    try:
        y = m(x)
    except ValueError as err:
        assert type(m).__name__ in str(err) and str(tuple(x.shape)) in str(err), str(err)
        return
    assert tuple(y.shape) == expected_shape(m, B, C, *hw)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_follows_input(case, dtype):
    m = make(case).eval().to(dtype)
    y = m(torch.randn(B, C, H, W, dtype=dtype))
    assert y.dtype == dtype


def test_device_follows_input(case):
    devices = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        m = make(case).eval().to(device)
        y = m(torch.randn(B, C, H, W, device=device))
        assert y.device.type == device


class _RecordAllocations(TorchDispatchMode):
    """Every tensor that an operator returns off the meta device, by operator name."""

    def __init__(self):
        super().__init__()
        self.allocated = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.allocated += [str(func) for t in tree_leaves(out)
                           if isinstance(t, torch.Tensor) and t.device.type != "meta"]
        return out


def test_the_allocation_recorder_sees_allocations():
    """The recorder of the meta test below would catch a module that builds on the CPU."""
    with _RecordAllocations() as record:
        torch.nn.Linear(4, 3)
    assert record.allocated
    with _RecordAllocations() as record:
        torch.nn.Linear(4, 3, device="meta")
    assert not record.allocated


def test_built_on_meta_allocates_nothing(case):
    """device="meta" reaches every parameter and buffer as PyTorch's factory keyword (not by a
    .to() at the end): building allocates no tensor anywhere, and forward on a meta input gives
    the right shape."""
    with _RecordAllocations() as record:
        m = build(case[0], C, H, W, variant=case[1], device="meta")
    assert not record.allocated, f"tensors allocated off the meta device by {sorted(set(record.allocated))}"
    off = [n for n, t in [*m.named_parameters(), *m.named_buffers()] if t.device.type != "meta"]
    assert not off, f"not on meta: {off}"
    y = m.eval()(torch.empty(B, C, H, W, device="meta"))
    assert y.device.type == "meta" and tuple(y.shape) == expected_shape(m, B, C, H, W)


def test_built_in_float64(case):
    """dtype=torch.float64 reaches every floating parameter and buffer (integer buffers, such as
    BatchNorm's num_batches_tracked, stay integer), and the official initialisation runs in float64.

    From one seed, a module built in float64 does NOT hold the float32 module's .double() values:
    on the CPU uniform_ draws a float64 from one 64-bit random number and a float32 from one
    32-bit number, and normal_ on 16 or more values draws its uniforms in the tensor's dtype, so
    the two random streams differ after the first draw (no tolerance makes them equal; PyTorch's
    own layers do the same). What is checked instead: (1) the module equals, exactly, the one
    built from the same seed with float64 as the default dtype (so the float64 draws are made
    where the float32 ones are, with the same initialisers, and nothing is converted
    afterwards); (2) every value that the initialisation fixes (those equal in float32 builds
    from two seeds: BatchNorm's ones and zeros, zero gammas and last convolutions) equals the
    float32 module's, exactly; (3) every random tensor of 256 values or more has the root mean
    square of its float32 counterpart within a factor of 4/3 (same initialiser, same scale)."""
    name, variant = case
    torch.manual_seed(1)
    m32 = build(name, C, H, W, variant=variant).state_dict()
    torch.manual_seed(1)
    m64 = build(name, C, H, W, variant=variant, dtype=torch.float64).state_dict()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(1)
        by_default = build(name, C, H, W, variant=variant).state_dict()
    finally:
        torch.set_default_dtype(default)
    torch.manual_seed(2)
    other_seed = build(name, C, H, W, variant=variant).state_dict()
    assert list(m64) == list(m32)
    for key, ref in m32.items():
        t = m64[key]
        assert t.dtype == (torch.float64 if ref.is_floating_point() else ref.dtype), f"{key}: {t.dtype}"
        assert t.shape == ref.shape
        assert torch.equal(t, by_default[key]), f"{key} differs from the build with float64 as the default"
        if not ref.is_floating_point():
            assert torch.equal(t, ref), key
            continue
        fixed = ref == other_seed[key]
        assert torch.equal(t[fixed], ref.double()[fixed]), f"{key}: initialised constants differ"
        drawn = ~fixed
        if int(drawn.sum()) >= 256:
            ratio = t[drawn].square().mean().sqrt() / ref.double()[drawn].square().mean().sqrt()
            assert 0.75 < ratio < 4 / 3, f"{key}: root mean square {ratio:.3f} x the float32 one"


def test_built_in_bfloat16_runs_on_bfloat16(case):
    m = randomize_(build(case[0], C, H, W, variant=case[1], dtype=torch.bfloat16)).eval()
    floating = [t for t in [*m.parameters(), *m.buffers()] if t.is_floating_point()]
    assert all(t.dtype == torch.bfloat16 for t in floating)
    x = torch.randn(B, C, H, W, dtype=torch.bfloat16)
    with torch.no_grad():
        y = m(x)
        reference = copy.deepcopy(m).float()(x.float())
    assert y.dtype == torch.bfloat16 and tuple(y.shape) == expected_shape(m, B, C, H, W)
    assert torch.isfinite(y).all()
    scale = reference.abs().max().clamp(min=1.0)
    assert (y.float() - reference).abs().max() <= 0.08 * scale


@pytest.mark.parametrize(
    "kwargs, error",
    [({"dtype": "float32"}, TypeError), ({"dtype": torch.int64}, TypeError),
     ({"device": 3.5}, TypeError), ({"device": ["cpu"]}, TypeError), ({"device": "nonsense"}, ValueError)],
    ids=["dtype-str", "dtype-int64", "device-float", "device-list", "device-bad-str"],
)
def test_bad_factory_keywords_name_the_class(case, kwargs, error):
    """A dtype that is not a floating torch.dtype, or a device that is not a torch.device, str or
    int, is refused with the class's name, even by modules without parameters. (PyTorch alone
    would say "empty(): argument 'dtype' must be torch.dtype, not str", without the class, and a
    parameter-free module would accept it silently.)"""
    cls = type(build(case[0], C, H, W, variant=case[1]))
    with pytest.raises(error, match=cls.__name__):
        build(case[0], C, H, W, variant=case[1], **kwargs)


@pytest.mark.skipif(torch.accelerator.is_available(), reason="device=3 is a valid accelerator index here")
def test_an_accelerator_index_without_an_accelerator_names_the_class(case):
    """device=3 is of a valid type (an int is an accelerator index, as in PyTorch); on a machine
    without an accelerator it is refused with a ValueError that names the class and carries
    PyTorch's reason."""
    cls = type(build(case[0], C, H, W, variant=case[1]))
    with pytest.raises(ValueError, match=cls.__name__ + ".*accelerator"):
        build(case[0], C, H, W, variant=case[1], device=3)


def test_gradcheck_float64(case):
    m = make(case, channels=8, height=5, width=6).eval().double()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), fast_mode=True, eps=1e-6, atol=1e-5)


def test_every_parameter_gets_a_gradient(case):
    m = make(case).train()
    x = torch.randn(B, C, H, W, requires_grad=True)   # parameter-free modules need a graph too
    m(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters that take no part in the output: {missing}"


def test_each_sample_depends_only_on_itself_in_eval(case):
    # float64: in float32 a batched 1x1 convolution may round differently from an unbatched one
    m = make(case).eval().double()
    x = torch.randn(3, C, H, W, dtype=torch.float64)
    with torch.no_grad():
        together = m(x)
        alone = torch.cat([m(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-9, atol=1e-9)


def test_state_dict_round_trip(case):
    m = make(case, seed=1).eval()
    fresh = build(case[0], C, H, W, variant=case[1]).eval()
    fresh.load_state_dict(copy.deepcopy(m.state_dict()))
    x = torch.randn(B, C, H, W)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_matches_eager(case, backend):
    torch._dynamo.reset()
    m = make(case).eval()
    x = torch.randn(B, C, H, W)
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m, backend=backend, fullgraph=True)(x)
    assert_close_to_scale(compiled, eager, rtol=1e-4)


def test_torch_export_matches_eager(case):
    m = make(case).eval()
    x = torch.randn(B, C, H, W)
    program = torch.export.export(m, (x,))
    with torch.no_grad():
        assert_close_to_scale(program.module()(x), m(x), rtol=1e-5)


def test_onnx_export_runs_in_onnxruntime(case):
    """A reported pitfall of other ports: adaptive pools to sizes that do not divide the map, max-with-indices and the like
    break ONNX export. Export with the TorchScript-based exporter (opset 17) and run the graph."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = make(case).eval()
    x = torch.randn(B, C, H, W)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # the exporter's deprecation notices
        torch.onnx.export(m, (x,), buffer, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert_close_to_scale(torch.from_numpy(y), m(x), rtol=1e-4)


def test_bfloat16_autocast_is_finite_and_close(case):
    m = make(case).eval()
    x = torch.randn(B, C, H, W)
    with torch.no_grad():
        reference = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
    assert torch.isfinite(low).all()
    scale = reference.abs().max().clamp(min=1.0)
    assert (low.float() - reference).abs().max() <= 0.05 * scale


@pytest.mark.parametrize(
    "shape",
    [(C, H, W), (B, C, H, W, 1), (B, C + 1, H, W), (B, max(1, C // 2), H, W)],
    ids=["rank3", "rank5", "more-channels", "fewer-channels"],
)
def test_bad_input_names_module_and_shapes(case, shape):
    m = make(case).eval()
    x = torch.randn(*shape)
    with pytest.raises(ValueError) as info:
        m(x)
    message = str(info.value)
    assert type(m).__name__ in message, message
    assert str(tuple(x.shape)) in message, message
    assert str(C) in message.replace(str(tuple(x.shape)), ""), message


def test_non_tensor_input_is_a_type_error(case):
    m = make(case).eval()
    with pytest.raises(TypeError, match=type(m).__name__):
        m(torch.randn(B, C, H, W).numpy())


def test_batch_of_one_in_eval(case):
    m = make(case).eval()
    assert m(torch.randn(1, C, H, W)).shape[0] == 1


def test_unknown_variant_is_refused(case):
    name, _ = case
    with pytest.raises(ValueError, match="variant"):
        build(name, C, H, W, variant="no-such-variant")


def test_torchscript_script_and_trace_match_eager(case):
    m = make(case).eval()
    x = torch.randn(B, C, H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # TorchScript's deprecation notices
        scripted = torch.jit.script(m)
        traced = torch.jit.trace(m, (x,), check_trace=False)
    with torch.no_grad():
        eager = m(x)
        assert_close_to_scale(scripted(x), eager, rtol=1e-5)
        assert_close_to_scale(traced(x), eager, rtol=1e-5)


def test_every_name_accepts_the_official_variant():
    """Where the official code computes the paper's formula, "official" builds the same module."""
    import attn_lib

    for name in attn_lib.available():
        m = build(name, C, H, W, variant="official")
        assert tuple(m(torch.randn(B, C, H, W)).shape)[:2] == expected_shape(m, B, C, H, W)[:2]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_with_large_activations_tracks_float32(case, dtype):
    """A reported pitfall of other ports: float16 sums overflow silently (SimAM's variance, DANet's channel energy at large
    maps). With activations of std 10 on a 32 x 32 map the half-precision module must stay finite
    and close to the same (rounded) weights and input computed in float32: the error measured is
    the module's arithmetic, not the rounding of its weights."""
    m = make(case, height=32, width=32).eval().to(dtype)
    x = (torch.randn(B, C, 32, 32) * 10).to(dtype)
    with torch.no_grad():
        reference = copy.deepcopy(m).float()(x.float())
        low = m(x)
    assert low.dtype == dtype
    assert torch.isfinite(low).all(), "non-finite values in half precision"
    scale = reference.abs().max().clamp(min=1.0)
    tolerance = 0.02 if dtype == torch.float16 else 0.08
    error = (low.float() - reference).abs().max()
    assert error <= tolerance * scale, f"max error {error:.3g} against an output scale {scale:.3g}"


def test_integer_input_is_a_type_error(case):
    m = make(case).eval()
    with pytest.raises(TypeError, match=type(m).__name__):
        m(torch.randint(0, 5, (B, C, H, W)))


def test_input_of_another_dtype_than_the_weights_is_a_type_error(case):
    m = make(case).eval()
    if not list(m.parameters()):
        pytest.skip("no weights: any floating dtype is computed in its own precision")
    with pytest.raises(TypeError, match=type(m).__name__):
        copy.deepcopy(m).half()(torch.randn(B, C, H, W))
    with pytest.raises(TypeError, match=type(m).__name__):
        m(torch.randn(B, C, H, W).half())


@pytest.mark.parametrize("empty", [(0, C, H, W), (B, C, 0, W), (B, C, H, 0)],
                         ids=["no-samples", "no-rows", "no-columns"])
def test_empty_input_is_refused_clearly(case, empty):
    """An empty batch or an empty map: without the check, pooling over zero positions gives NaNs
    (CSRA's mean) or a raw error from deep inside torch (a max over nothing, a convolution)."""
    m = make(case).eval()
    x = torch.randn(*empty)
    with pytest.raises(ValueError) as info:
        m(x)
    assert type(m).__name__ in str(info.value) and str(tuple(x.shape)) in str(info.value)


def test_batch_of_one_in_train_works_or_is_refused_clearly(case):
    """A reported pitfall of other ports: BatchNorm after global pooling cannot train on one sample: refuse it with a
    ValueError that names the module, not PyTorch's own error from inside."""
    m = make(case).train()
    x = torch.randn(1, C, H, W)
    try:
        y = m(x)
    except ValueError as err:
        assert type(m).__name__ in str(err) and str(tuple(x.shape)) in str(err), str(err)
        return
    assert y.shape[0] == 1 and torch.isfinite(y).all()


@pytest.mark.parametrize("channels, error", [(0, ValueError), (-3, ValueError),
                                             (16.0, TypeError), (True, TypeError)],
                         ids=["zero", "negative", "float", "bool"])
def test_a_bad_channel_count_is_refused_by_the_class_itself(case, channels, error):
    """A module file copied into a model is built from its class, not through
    attn_lib.create: the constructor refuses a channel count that is not an int >= 1 with
    its own name (without the check, 16.0 failed inside torch.empty and 0 built a module
    that refused every input)."""
    name, variant = case
    cls = attn_lib.get_class(name)
    kwargs = {"variant": variant}
    if "spatial_size" in inspect.signature(cls.__init__).parameters:
        kwargs["spatial_size"] = (H, W)
    with pytest.raises(error, match=cls.__name__ + ".*channels"):
        cls(channels, **kwargs)
