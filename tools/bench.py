"""Speed and memory of every registered module, measured side by side with the official code.

    python tools/bench.py [NAME ...] [--sizes 4x64x32x32 8x256x28x28] [--no-tiny] [--no-memory]
                          [--rounds 5] [--min-run-time 0.1] [--harness PATH]

For each registry name and each input size it times, in one run and interleaved round by round,
the library's paper and official variants and the official code itself (built from a git mirror
of its repository by the official-code harness, when one is given with --harness or
$ATTN_OFFICIAL_HARNESS and its mirrors exist): the forward pass in eval mode under no_grad, and
forward + backward in train mode. It prints ratios ours / official (below 1: ours is faster),
each the median over the rounds of the ratio within a round, so that a slow moment of the machine
touches both sides. With timm installed it adds, at (1, 64, 7, 7), the per-call ratio against
timm's layer for SE, CBAM, GC and Coordinate Attention. Finally the peak memory of the modules
that build (HW) x (HW) matrices (DANet, PSA, RGA) from 16 x 16 to 96 x 96.

All timings use torch.utils.benchmark with 2 threads. Absolute times depend on the machine; the
ratios are what the book quotes.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import inspect
import os
import statistics
import sys
import types
import weakref
from pathlib import Path

import torch
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import attn_lib  # noqa: E402

# registry name -> (harness spec, its constructor keywords for (C, H, W), output wrapper)
OFFICIAL = {
    "se": ("se_bias", lambda c, h, w: dict(num_channels=c, reduction_ratio=16), None),
    "simam": ("simam", lambda c, h, w: dict(e_lambda=1e-4), None),
    "strip_pooling": ("strip_pooling_spm", lambda c, h, w: dict(inplanes=c, outplanes=c), "gate"),
    "mixed_pooling": ("strip_pooling_mpm", lambda c, h, w: dict(in_channels=c), None),
    "scconv": ("scconv", lambda c, h, w: dict(inplanes=c, planes=c), None),
    "sc_bottleneck": ("scbottleneck", lambda c, h, w: dict(inplanes=c, planes=c // 4), None),
    "lka": ("lka", lambda c, h, w: dict(dim=c), None),
    "van_attention": ("van_attention", lambda c, h, w: dict(d_model=c), None),
    "cbam": ("cbam", lambda c, h, w: dict(gate_channels=c, reduction_ratio=16), None),
    "bam": ("bam", lambda c, h, w: dict(gate_channel=c), None),
    "scse": ("scse", lambda c, h, w: dict(num_channels=c, reduction_ratio=2), None),
    "psa_parallel": ("psa_p", lambda c, h, w: dict(inplanes=c, planes=c), None),
    "psa_sequential": ("psa_s", lambda c, h, w: dict(inplanes=c, planes=c), None),
    "triplet": ("triplet", lambda c, h, w: dict(no_spatial=False), None),
    "gc": ("gc", lambda c, h, w: dict(inplanes=c, ratio=1.0 / 16), None),
    "coord_attention": ("coordatt", lambda c, h, w: dict(inp=c, oup=c, reduction=32), None),
    "danet_position": ("danet_pam", lambda c, h, w: dict(in_dim=c), None),
    "danet_channel": ("danet_cam", lambda c, h, w: dict(in_dim=c), None),
    "rga_spatial": ("rga_s", lambda c, h, w: dict(in_channel=c, in_spatial=h * w), None),
    "rga_channel": ("rga_c", lambda c, h, w: dict(in_channel=c, in_spatial=h * w), None),
}
NO_PYTORCH_OFFICIAL = {"residual_attention": "official code is Caffe"}
TIMM = {  # name -> (timm layer, constructor keywords for C); compared with variant="official"
    "se": ("SEModule", lambda c: dict(rd_channels=max(1, c // 16))),
    "cbam": ("CbamModule", lambda c: dict(rd_ratio=1 / 16)),
    "gc": ("GlobalContext", lambda c: dict(rd_ratio=1 / 16, fuse_add=True, fuse_scale=False)),
    "coord_attention": ("CoordAttn", lambda c: dict()),
}
HW_MODULES = ["danet_position", "danet_channel", "psa_parallel", "psa_sequential", "rga_spatial", "rga_channel"]


class Gate(torch.nn.Module):
    """x * m(x), for official modules that return only the attention map."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return x * self.m(x)

def _torchvision_stand_in():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchvision_stand_in.py")
    spec = importlib.util.spec_from_file_location("torchvision_stand_in", here)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_harness(path):
    if not path or not os.path.isfile(path):
        return None
    _torchvision_stand_in().install_if_broken()   # the harness imports timm for VAN
    spec = importlib.util.spec_from_file_location("official_harness", path)
    harness = importlib.util.module_from_spec(spec)
    sys.modules["official_harness"] = harness
    spec.loader.exec_module(harness)
    return harness


def official_module(harness, name, c, h, w):
    if harness is None or name not in OFFICIAL:
        return None
    spec, kwargs, wrap = OFFICIAL[name]
    try:
        m = harness.load_official(spec, **kwargs(c, h, w))
    except harness.MirrorMissing:
        return None
    return Gate(m) if wrap == "gate" else m


def build(name, c, h, w, variant):
    cls = attn_lib.get_class(name)
    kwargs = {"variant": variant}
    if "spatial_size" in inspect.signature(cls.__init__).parameters:
        kwargs["spatial_size"] = (h, w)
    return attn_lib.create(name, c, **kwargs)


def timm_layers():
    """timm's attention layers (timm imports torchvision, which a stand-in replaces where it
    cannot be imported: tools/torchvision_stand_in.py)."""
    if importlib.util.find_spec("timm") is None:
        return None
    _torchvision_stand_in().install_if_broken()
    out = types.SimpleNamespace()
    for module, cls in [("squeeze_excite", "SEModule"), ("cbam", "CbamModule"),
                        ("global_context", "GlobalContext"), ("coord_attn", "CoordAttn")]:
        setattr(out, cls, getattr(importlib.import_module("timm.layers." + module), cls))
    return out


def timer(module, x, backward, min_run_time):
    if backward:
        module.train()
        xg = x.clone().requires_grad_(True)
        with torch.no_grad():
            g = torch.randn_like(module(x))          # a dense output gradient, as in a network
        stmt, env = "m(x).backward(g)", {"m": module, "x": xg, "g": g}
    else:
        module.eval()
        stmt, env = "with torch.no_grad(): m(x)", {"m": module, "x": x, "torch": torch}
    t = benchmark.Timer(stmt, globals=env, num_threads=torch.get_num_threads())
    return t.blocked_autorange(min_run_time=min_run_time).median


def interleaved(candidates, x, backward, rounds, min_run_time):
    """Median over rounds of each candidate's time relative to the last one (the reference)."""
    ratios = {k: [] for k in candidates}
    for _ in range(rounds):
        times = {k: timer(m, x, backward, min_run_time) for k, m in candidates.items()}
        ref = times[list(candidates)[-1]]
        for k, t in times.items():
            ratios[k].append(t / ref)
    return {k: statistics.median(v) for k, v in ratios.items()}


class PeakMemory(TorchDispatchMode):
    """Peak bytes of live tensor storage created inside the block (CPU or CUDA alike): every
    output storage of every operation is counted until it is freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen = set()

    def _track(self, t):
        if not isinstance(t, torch.Tensor):
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.seen or storage.nbytes() == 0:
            return
        self.seen.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, storage.nbytes())

    def _free(self, key, nbytes):
        self.seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            self._track(t)
        return out


def peak_memory(module, x):
    module.eval()
    with torch.no_grad(), PeakMemory() as mode:
        module(x)
    return mode.peak


def parse_size(text):
    b, c, h, w = (int(v) for v in text.lower().split("x"))
    return b, c, h, w


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="registry names (default: all)")
    parser.add_argument("--sizes", nargs="*", default=["4x64x32x32", "8x256x28x28"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-tiny", action="store_true", help="skip the per-call comparison with timm")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory table")
    parser.add_argument("--harness", default=os.environ.get("ATTN_OFFICIAL_HARNESS"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.names or attn_lib.available()
    harness = load_harness(args.harness)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} interleaved rounds; "
          f"official code: {'from the harness mirrors' if harness else 'not available (no --harness)'}")
    print("\nRatios of time, ours / official code (< 1: ours is faster); fwd: eval, no_grad; "
          "fwd+bwd: train mode.\n")
    print("| name | input | paper fwd | official fwd | paper fwd+bwd | official fwd+bwd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        for size in args.sizes:
            b, c, h, w = parse_size(size)
            x = torch.randn(b, c, h, w)
            official = official_module(harness, name, c, h, w)
            if official is None:
                why = NO_PYTORCH_OFFICIAL.get(name, "official code not available")
                print(f"| {name} | {size} | {why} | | | |")
                continue
            ours = {v: build(name, c, h, w, v) for v in attn_lib.get_class(name).VARIANTS}
            cells = []
            for backward in (False, True):
                candidates = {**{v: copy.deepcopy(m) for v, m in ours.items()}, "official code": official}
                r = interleaved(candidates, x, backward, args.rounds, args.min_run_time)
                cells += [f"{r[v]:.2f}" if v in r else "-" for v in ("paper", "official")]
            print(f"| {name} | {size} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    if not args.no_tiny:
        layers = timm_layers()
        print("\nPer call at (1, 64, 7, 7), forward in eval mode: variant='official' / timm's layer.\n")
        if layers is None:
            print("(timm is not installed)")
        else:
            print("| name | timm layer | ours / timm |")
            print("| --- | --- | --- |")
            x = torch.randn(1, 64, 7, 7)
            for name in [n for n in names if n in TIMM]:
                cls, kwargs = TIMM[name]
                candidates = {"ours": build(name, 64, 7, 7, "official"), cls: getattr(layers, cls)(64, **kwargs(64))}
                r = interleaved(candidates, x, False, args.rounds, args.min_run_time)
                print(f"| {name} | {cls} | {r['ours']:.2f} |")
    if not args.no_memory:
        sides = [16, 32, 64, 96]
        print("\nPeak memory of live tensors in one forward pass, B=1, C=64, MiB "
              "(paper / official variant / official code).\n")
        print("| name | " + " | ".join(f"{s}x{s}" for s in sides) + " |")
        print("| --- |" + " --- |" * len(sides))
        for name in [n for n in names if n in HW_MODULES]:
            cells = []
            for s in sides:
                x = torch.randn(1, 64, s, s)
                values = [peak_memory(build(name, 64, s, s, v), x) for v in ("paper", "official")]
                official = official_module(harness, name, 64, s, s)
                values.append(peak_memory(official, x) if official is not None else None)
                cells.append(" / ".join("-" if v is None else f"{v / 2**20:.2f}" for v in values))
            print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
