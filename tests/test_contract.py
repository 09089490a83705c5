"""The contract every registered module keeps, parametrized over attn_lib.available() and each
module's VARIANTS: a new chapter's module is covered here with no new test code."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch

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


def test_output_shape(case):
    m = make(case).eval()
    y = m(torch.randn(B, C, H, W))
    assert tuple(y.shape) == (B, expected_channels(m, C), H, W)


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
    assert tuple(y.shape) == (B, expected_channels(m, C), *hw)
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
    """PITFALLS: adaptive pools to sizes that do not divide the map, max-with-indices and the like
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
        assert tuple(m(torch.randn(B, C, H, W)).shape)[:2] == (B, expected_channels(m, C))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_with_large_activations_tracks_float32(case, dtype):
    """PITFALLS: float16 sums overflow silently (SimAM's variance, DANet's channel energy at large
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


def test_empty_batch_is_refused_clearly(case):
    m = make(case).eval()
    x = torch.randn(0, C, H, W)
    with pytest.raises(ValueError) as info:
        m(x)
    assert type(m).__name__ in str(info.value) and str(tuple(x.shape)) in str(info.value)


def test_batch_of_one_in_train_works_or_is_refused_clearly(case):
    """PITFALLS: BatchNorm after global pooling cannot train on one sample: refuse it with a
    ValueError that names the module, not PyTorch's own error from inside."""
    m = make(case).train()
    x = torch.randn(1, C, H, W)
    try:
        y = m(x)
    except ValueError as err:
        assert type(m).__name__ in str(err) and str(tuple(x.shape)) in str(err), str(err)
        return
    assert y.shape[0] == 1 and torch.isfinite(y).all()
