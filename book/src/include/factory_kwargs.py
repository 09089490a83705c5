# PyTorch's factory keywords (one source: book/src/include/factory_kwargs.py).
# Every module passes {"device": ..., "dtype": ...} to each parameter and buffer it
# creates, as torch.nn's own layers do, so device="meta" allocates nothing and timm's
# attn_layer(C, device=, dtype=) works without an adapter.
def _factory_kwargs(module: str, device=None, dtype=None) -> dict:
    """The keywords {"device": device, "dtype": dtype} after refusing, with `module`'s
    name, a device that is not a torch.device, str or int (an int is an accelerator
    index, as in PyTorch) and a dtype that is not a floating-point torch.dtype.
    Parameter-free modules check them too, so a wrong keyword never passes silently."""
    if device is not None:
        accepted = (str, int, torch.device)
        if isinstance(device, bool) or not isinstance(device, accepted):
            raise TypeError(module + ": device must be a torch.device, a str or an "
                            "int, got " + type(device).__name__ + " " + repr(device))
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise ValueError(module + ": invalid device " + repr(device)
                             + " (" + str(err) + ")") from None
    if dtype is not None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(module + ": dtype must be a torch.dtype such as "
                            "torch.float32, got " + type(dtype).__name__ + " "
                            + repr(dtype))
        if not dtype.is_floating_point:
            raise TypeError(module + ": dtype must be a floating-point torch.dtype, "
                            "got " + str(dtype))
    return {"device": device, "dtype": dtype}


def _check_channels(module: str, channels) -> None:
    """Refuse, with `module`'s name, a channel count C that is not an int >= 1 (a float
    or a bool would otherwise fail deep inside torch, and 0 would build an empty module
    that refuses every input)."""
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise TypeError(module + ": channels must be an int, got "
                        + type(channels).__name__ + " " + repr(channels))
    if channels < 1:
        raise ValueError(module + ": channels must be >= 1, got " + str(channels))
