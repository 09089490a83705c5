# The input checks every module runs first (one source:
# book/src/include/input_checks.py). Plain torch and string operations, so that
# torch.jit.script, torch.jit.trace, torch.compile(fullgraph=True), torch.export and
# ONNX export all keep working.
from typing import List, Optional


def _shape_str(shape: List[int]) -> str:
    """A shape written as Python writes a tuple: (2, 16, 7, 9)."""
    if len(shape) == 1:
        return "(" + str(shape[0]) + ",)"
    return "(" + ", ".join([str(n) for n in shape]) + ")"


def _autocast_is_on(x: torch.Tensor) -> bool:
    if torch.jit.is_scripting():
        return True  # TorchScript cannot ask safely; the dtype check is skipped there
    if x.device.type == "meta":
        return False         # autocast has no meta device (asking raises)
    return torch.is_autocast_enabled(x.device.type)


def _check_input(module: str, x: torch.Tensor, channels: int,
                 weight: Optional[torch.Tensor] = None) -> None:
    """Refuse what `module` cannot compute, naming the module, what it expects and what
    it got: a non-tensor, a shape other than (B, channels, H, W) with B, H, W >= 1,
    a non-floating dtype, and (outside autocast) an input whose dtype differs from the
    module's weights."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(module + " expects a torch.Tensor, got " + type(x).__name__)
    if x.dim() != 4 or x.shape[1] != channels or x.numel() == 0:
        raise ValueError(module + " expects input of shape (B, " + str(channels)
                         + ", H, W) with B, H, W >= 1, got " + _shape_str(x.shape))
    if not x.is_floating_point():
        raise TypeError(module + " expects a floating-point tensor, got dtype "
                        + str(x.dtype))
    if weight is not None and x.dtype != weight.dtype and not _autocast_is_on(x):
        raise TypeError(module + " has " + str(weight.dtype) + " weights but got a "
                        + str(x.dtype) + " input: convert the module or the input")
