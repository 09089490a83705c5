"""Record what the official code computes, as data the tests can check without it.

    python tools/official_fixtures.py --harness PATH/official_harness.py [NAME ...]

For each entry of FIXTURES below, the harness builds the official module straight from a git
mirror of its repository at the commit it pins (nothing of that code is copied here). This script
gives every parameter and BatchNorm statistic a seeded random value, runs the module in float64
on a seeded input in eval and in train mode, and saves

    tests/fixtures/official/<entry>.pt = {"source", "name", "kwargs", "channels", "state_dict",
                                          "initial_state_dict", "input", "eval", "train"}

(plus "eval_aux", the whole official output tuple in eval mode, where the output is a tuple).

`state_dict` is the official module's own state dict, with its key names, shapes and order;
`initial_state_dict` is the one the official constructor gives after torch.manual_seed(0).
tests/test_official.py loads it with attn_lib.load_official and asserts that the library's
variant="official" reproduces both outputs. CI has no mirrors: it only reads the files.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "official"

# entry: harness spec, its constructor keywords, the registry name and the keywords that build
# the same module with attn_lib.load_official, the input (C, H, W), how the official module's
# output becomes the library module's output (most are the same), and, where the official
# network rather than the module initialises it, init_from=(network spec, keywords, submodule).
# wrap="first": the official module returns a tuple; [0] is the output, the tuple is "eval_aux".
# sum={name: spec, ...} instead of spec: no official module computes it; the module is our
# OfficialSum of those official modules, each built with kwargs (its keys prefixed "<name>.").
# dropout_off=(path, ...): set p = 0 in these official Dropout layers after randomisation, so the
# train output is deterministic. note: what else the source string should say.
FIXTURES = {
    "simam": dict(spec="simam", kwargs={}, name="simam", create={}, shape=(16, 7, 9)),
    "strip_pooling": dict(spec="strip_pooling_spm", kwargs=dict(inplanes=32, outplanes=32),
                          name="strip_pooling", create={}, shape=(32, 7, 9), wrap="gate"),
    "mixed_pooling": dict(spec="strip_pooling_mpm", kwargs=dict(in_channels=16),
                          name="mixed_pooling", create={}, shape=(16, 24, 24)),
    "scconv": dict(spec="scconv", kwargs=dict(inplanes=32, planes=32), name="scconv", create={},
                   shape=(32, 12, 12)),
    "sc_bottleneck": dict(spec="scbottleneck", kwargs=dict(inplanes=64, planes=16),
                          name="sc_bottleneck", create={}, shape=(64, 12, 12)),
    "lka": dict(spec="lka", kwargs=dict(dim=16), name="lka", create={}, shape=(16, 9, 11),
                init_from=("van_block", dict(dim=16), "attn.spatial_gating_unit")),
    "van_attention": dict(spec="van_attention", kwargs=dict(d_model=16), name="van_attention",
                          create={}, shape=(16, 9, 11),
                          init_from=("van_block", dict(dim=16), "attn")),
    "cbam": dict(spec="cbam", kwargs=dict(gate_channels=64, reduction_ratio=16), name="cbam",
                 create=dict(reduction=16), shape=(64, 7, 9),
                 init_from=("jongchan_resnet", dict(att_type="CBAM"), "layer1.0.cbam")),
    "bam": dict(spec="bam", kwargs=dict(gate_channel=64), name="bam", create={}, shape=(64, 8, 8),
                init_from=("jongchan_resnet", dict(att_type="BAM"), "bam1")),
    "scse": dict(spec="scse", kwargs=dict(num_channels=16, reduction_ratio=2), name="scse",
                 create=dict(reduction=2), shape=(16, 7, 9)),
    "psa_parallel": dict(spec="psa_p", kwargs=dict(inplanes=32, planes=32), name="psa_parallel",
                         create={}, shape=(32, 7, 9)),
    "psa_sequential": dict(spec="psa_s", kwargs=dict(inplanes=32, planes=32),
                           name="psa_sequential", create={}, shape=(32, 7, 9)),
    "triplet": dict(spec="triplet", kwargs=dict(no_spatial=False), name="triplet", create={},
                    shape=(16, 7, 9)),
    "triplet_models": dict(spec="triplet_v1", kwargs=dict(gate_channels=16), name="triplet",
                           create={}, shape=(16, 7, 9)),
    "gc": dict(spec="gc", kwargs=dict(inplanes=64, ratio=1.0 / 16), name="gc",
               create=dict(reduction=16), shape=(64, 7, 9)),
    "coord_attention": dict(spec="coordatt", kwargs=dict(inp=32, oup=32, reduction=32),
                            name="coord_attention", create=dict(reduction=32), shape=(32, 7, 9)),
    "danet_position": dict(spec="danet_pam", kwargs=dict(in_dim=32), name="danet_position",
                           create={}, shape=(32, 7, 9)),
    "danet_channel": dict(spec="danet_cam", kwargs=dict(in_dim=32), name="danet_channel",
                          create={}, shape=(32, 7, 9)),
    "danet": dict(sum=dict(position="danet_pam", channel="danet_cam"), kwargs=dict(in_dim=32),
                  name="danet", create={}, shape=(32, 7, 9)),
    "danet_head": dict(spec="danet_head", kwargs=dict(in_channels=32, out_channels=5),
                       name="danet_head", create=dict(out_channels=5, aux=True, dropout=0.0),
                       shape=(32, 7, 9), wrap="first",
                       dropout_off=("conv6.0", "conv7.0", "conv8.0"),
                       note="in_channels=32, out_channels=5; output [0], the fused one; "
                            "Dropout2d p set to 0 after init for a deterministic train output"),
    "rga_spatial": dict(spec="rga_s", kwargs=dict(in_channel=32, in_spatial=7 * 9),
                        name="rga_spatial", create=dict(spatial_size=(7, 9)), shape=(32, 7, 9)),
    "rga_channel": dict(spec="rga_c", kwargs=dict(in_channel=64, in_spatial=16 * 12),
                        name="rga_channel", create=dict(spatial_size=(16, 12)), shape=(64, 16, 12)),
    "rga": dict(spec="rga_sc", kwargs=dict(in_channel=64, in_spatial=7 * 9, use_spatial=True,
                                          use_channel=True),
                name="rga", create=dict(spatial_size=(7, 9)), shape=(64, 7, 9),
                note="use_spatial=True, use_channel=True"),
    "se": dict(spec="se_bias", kwargs=dict(num_channels=32, reduction_ratio=8), name="se",
               create=dict(reduction=8), shape=(32, 7, 9)),
    "csra": dict(spec="csra_mha", kwargs=dict(num_heads=4, lam=0.1, input_dim=16, num_classes=5),
                 name="csra", create=dict(num_classes=5, num_heads=4, lam=0.1), shape=(16, 7, 9)),
    "csra_single": dict(spec="csra", kwargs=dict(input_dim=16, num_classes=5, T=1, lam=0.1),
                        name="csra", create=dict(num_classes=5, lam=0.1), shape=(16, 7, 9)),
}

def _torchvision_stand_in():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchvision_stand_in.py")
    spec = importlib.util.spec_from_file_location("torchvision_stand_in", here)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_harness(path: str):
    _torchvision_stand_in().install_if_broken()   # the harness imports timm for VAN
    spec = importlib.util.spec_from_file_location("official_harness", path)
    harness = importlib.util.module_from_spec(spec)
    sys.modules["official_harness"] = harness
    spec.loader.exec_module(harness)
    # Official networks whose constructors initialise the attention modules (FIXTURES init_from):
    # VAN's Block/VAN and Jongchan's ResNet do; the modules themselves do not.
    van, jongchan = "Visual-Attention-Network/VAN-Classification", "Jongchan/attention-module"
    harness.SPECS.setdefault("van_block", harness.Spec(van, {"van.py": "models/van.py"}, "van", "Block", dict(dim=64)))
    harness.SPECS.setdefault("jongchan_resnet", harness.Spec(
        jongchan, {"cbam.py": "MODELS/cbam.py", "bam.py": "MODELS/bam.py", "model_resnet.py": "MODELS/model_resnet.py"},
        "model_resnet", "ResidualNet", dict(network_type="CIFAR10", depth=18, num_classes=10, att_type="CBAM"),
        patches={"bam.py": [("self.gate_activation = gate_activation", "self.gate_activation = None")]}))
    # DANet's head (FIXTURES danet_head): danet.py without the package around it (BaseNet, ...nn).
    harness.SPECS.setdefault("danet_head", harness.Spec(
        "junfu1115/DANet",
        {"da_att.py": "encoding/nn/da_att.py", "danet.py": "encoding/models/sseg/danet.py"},
        "danet", "DANetHead", dict(in_channels=32, out_channels=5, norm_layer=torch.nn.BatchNorm2d),
        patches={"danet.py": [("from ...nn import PAM_Module", "from .da_att import PAM_Module"),
                              ("from ...nn import CAM_Module", "from .da_att import CAM_Module"),
                              ("from .base import BaseNet", "BaseNet = object"),
                              ("from torch.nn.functional import upsample,normalize",  # no upsample
                               "from torch.nn.functional import interpolate as upsample, "
                               "normalize")]}))
    return harness


class OfficialSum(torch.nn.Module):
    """Ours, not official code (FIXTURES sum=): the sum of official modules, each a submodule."""

    def __init__(self, parts: dict):
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)

    def forward(self, x):
        ys = [m(x) for m in self.children()]
        return sum(ys[1:], ys[0])


def build(harness, info: dict):
    if "sum" in info:
        return OfficialSum({name: harness.load_official(spec, **info["kwargs"])
                            for name, spec in info["sum"].items()})
    return harness.load_official(info["spec"], **info["kwargs"])


def describe(harness, info: dict) -> str:
    """repository@commit file::class (classes of one file joined by +) and what was changed."""
    parts, last = [], None
    for name in info["sum"].values() if "sum" in info else [info["spec"]]:
        spec = harness.SPECS[name]
        where = f"{spec.repo}@{harness.REPOS[spec.repo]['commit']} {list(spec.files.values())[-1]}"
        parts.append(spec.cls if where == last else f"{where}::{spec.cls}")
        last = where
    source = " + ".join(parts)
    if "sum" in info:
        source += (", summed by us (OfficialSum of tools/official_fixtures.py): no official module"
                   " sums them alone")
    return source + (f" ({info['note']})" if "note" in info else "")


def record(harness, entry: str, info: dict) -> dict:
    torch.manual_seed(0)
    official = build(harness, info).double()
    initial = {k: v.clone() for k, v in official.state_dict().items()}      # the official init
    if "init_from" in info:                 # initialised by the official network, not the module
        net_spec, net_kwargs, path = info["init_from"]
        torch.manual_seed(0)
        net = harness.load_official(net_spec, **net_kwargs).double()
        initial = {k: v.clone() for k, v in net.get_submodule(path).state_dict().items()}
    harness.randomize_(official, seed=0)
    for path in info.get("dropout_off", ()):
        official.get_submodule(path).p = 0.0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *info["shape"], generator=g, dtype=torch.float64)
    wrap = info.get("wrap")
    outputs = {}
    for mode in ("eval", "train"):
        m = copy.deepcopy(official).train(mode == "train")
        with torch.no_grad():
            y = m(x.clone())
        if wrap == "first":             # a tuple: [0] is the output; keep all of it in eval
            if mode == "eval":
                outputs["eval_aux"] = tuple(t.clone() for t in y)
            y = y[0]
        outputs[mode] = x * y if wrap == "gate" else y
    data = {
        "source": describe(harness, info),
        "official_kwargs": {k: v for k, v in info["kwargs"].items()},
        "name": info["name"], "channels": info["shape"][0], "kwargs": info["create"],
        "state_dict": {k: v.clone() for k, v in official.state_dict().items()},
        "initial_state_dict": initial,
        "input": x, "eval": outputs["eval"], "train": outputs["train"],
    }
    if "eval_aux" in outputs:
        data["eval_aux"] = outputs["eval_aux"]
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--harness", default=os.environ.get("ATTN_OFFICIAL_HARNESS"),
                        help="path of official_harness.py (or set ATTN_OFFICIAL_HARNESS)")
    parser.add_argument("entries", nargs="*", help=f"default: all of {', '.join(FIXTURES)}")
    args = parser.parse_args(argv)
    if not args.harness:
        parser.error("give --harness PATH or set ATTN_OFFICIAL_HARNESS")
    harness = load_harness(args.harness)
    OUT.mkdir(parents=True, exist_ok=True)
    for entry in args.entries or FIXTURES:
        data = record(harness, entry, FIXTURES[entry])
        torch.save(data, OUT / f"{entry}.pt")
        print(f"{entry}: {data['source']}, {len(data['state_dict'])} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
