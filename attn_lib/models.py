"""Networks with attention placed where each paper places it: ``attn_lib.models``.

    >>> from attn_lib import models
    >>> net = models.resnet50(attention="cbam", variant="official", reduction=16)
    >>> net = models.mobilenet_v2(attention="coord_attention")
    >>> net = models.van_b0()             # VAN is built from the van_attention block
    >>> models.available()                # every network name
    >>> models.PLACEMENT["simam"].resnet  # where a registry name goes in a ResNet block

``attention=`` takes a registry name of ``attn_lib`` (or ``None``); the other keyword
arguments go to the attention module (``variant=`` included). Modules that are not
drop-in gates (``scconv``, ``sc_bottleneck``, ``residual_attention``, ``lka``,
``van_attention``) build their own networks (``scnet50``, ``attention56``,
``van_b0``, ...); asking a ResNet for one of them raises a ``ValueError`` that says
which network to use instead.

This file is hand-written (like ``__init__.py``) and imports only torch and the standard
library; the attention classes are looked up in the ``attn_lib`` registry when a network
is built, so copying this file alone needs ``attention=`` given as a class (with
``placement=``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

__all__ = [
    "PLACEMENT", "Placement", "available", "create",
    # networks
    "resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "mobilenet_v2",
    "van_b0", "van_b1", "van_b2", "van_b3", "scnet50", "scnet101",
    "attention56", "attention92",
    "ResNet", "MobileNetV2", "VAN", "SCNet", "ResidualAttentionNetwork",
    # their building blocks
    "BasicBlock", "Bottleneck", "InvertedResidual", "DropPath", "VANMlp", "VANBlock",
    "OverlapPatchEmbed", "PreActUnit",
]


# --------------------------------------------------------------------------------------
# Where each registry name goes
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """Where one registry name goes, and what it gates.

    gates: what the module reweights: "channel", "spatial", "channel+spatial" (two
        maps), "3-D" (one weight per element), "cross-dimension", "relation" (pairwise
        affinities), "block" (it is a convolution or a residual block, not a gate), or
        "classifier" (a classification head: it maps the last feature map to logits).
    drop_in: True when the module maps a (B, C, H, W) feature map to a gated map of the
        same shape and may be inserted after any layer.
    resnet: the position in attn_lib.models' ResNets, or None where it cannot go (see
        `instead`).
    mobilenet_v2: the position in mobilenet_v2, or None.
    source: the paper or official file the position follows.
    instead: the network to use when the name is not placed in ResNets.
    """

    gates: str
    drop_in: bool
    resnet: Optional[str]
    mobilenet_v2: Optional[str]
    source: str
    instead: str = ""


# ResNet positions (keys of _RESNET_POSITIONS below):
#   "after_bn3"     the block's last BN, before the addition (BasicBlock: after bn2)
#   "after_conv2"   the 3x3 convolution, before its BN (BasicBlock: the second 3x3)
#   "after_relu2"   the 3x3 convolution's BN and ReLU (BasicBlock: the first 3x3's)
#   "spm"           "after_relu2", in the last block of stages 1-3 and every block of
#                   stage 4
#   "stage_end_1_3" after the last block of stages 1, 2 and 3
#   "stage_end_1_4" after the last block of stages 1, 2, 3 and 4
#   "head"          after stage 4, before the global pooling
# MobileNetV2 positions:
#   "after_dw"      the depthwise convolution's BN and ReLU6, in blocks with an
#                   expansion (t > 1)
#   "after_dw_conv" the depthwise convolution, before its BN, in every block
#   "block_end"     the projection's BN, before the addition, in every block
PLACEMENT: dict[str, Placement] = {
    "se": Placement("channel", True, "after_bn3", "block_end",
                    "SE paper Fig. 3 (SE-ResNet module); MobileNetV2: the block end, "
                    "as SimAM's and Triplet Attention's code place their gates (the SE "
                    "paper has no MobileNetV2)"),
    "cbam": Placement("channel+spatial", True, "after_bn3", "block_end",
                      "CBAM paper Fig. 3; Jongchan/attention-module "
                      "MODELS/model_resnet.py"),
    "bam": Placement("channel+spatial", True, "stage_end_1_3", None,
                     "BAM paper Fig. 1: at each bottleneck of the network, between "
                     "stages; Jongchan/attention-module MODELS/model_resnet.py",
                     instead="BAM goes between the stages of a ResNet"),
    "scse": Placement("channel+spatial", True, "after_bn3", "block_end",
                      "scSE is placed after encoder and decoder blocks of U-Nets; in a "
                      "ResNet, at SE's position"),
    "psa_parallel": Placement("channel+spatial", True, "after_relu2", "after_dw",
                              "DeLightCMU/PSA network/hrnetv2.py: after the first 3x3 "
                              "conv, BN, ReLU"),
    "psa_sequential": Placement("channel+spatial", True, "after_relu2", "after_dw",
                                "DeLightCMU/PSA network/hrnetv2.py: after the first "
                                "3x3 conv, BN, ReLU"),
    "simam": Placement("3-D", True, "after_conv2", "after_dw_conv",
                       "ZjjConan/SimAM networks/imagenet/resnet.py and mobilenetv2.py: "
                       "right after the 3x3 (depthwise) convolution, before its BN"),
    "triplet": Placement("cross-dimension", True, "after_bn3", "block_end",
                         "landskape-ai/triplet-attention MODELS/resnet.py and "
                         "MODELS/mobilenet.py"),
    "gc": Placement("channel", True, "after_bn3", "block_end",
                    "GCNet paper Fig. 4(d) / Sec. 4: after the last 1x1 convolution of "
                    "each residual block, before the addition"),
    "coord_attention": Placement("channel+spatial", True, "after_bn3", "after_dw",
                                 "houqb/CoordAttention mbv2_ca.py (after the depthwise "
                                 "conv of each block with expansion); in a ResNet, at "
                                 "SE's position"),
    "strip_pooling": Placement("spatial", True, "spm", None,
                               "houqb/SPNet models/resnet.py: out * SPBlock(out) after "
                               "the 3x3 conv, BN, ReLU of the last block of each stage "
                               "and all of stage 4",
                               instead="SPNet places SPMs in ResNet bottlenecks only"),
    "mixed_pooling": Placement("block", False, "head", None,
                               "houqb/SPNet models/spnet.py SPHead: MPMs on the "
                               "backbone's last map",
                               instead="the MPM is a head module for the last feature "
                                       "map of a ResNet"),
    "danet_position": Placement("relation", True, "head", None,
                                "DANet paper Fig. 2: on the last feature map of the "
                                "(dilated) ResNet",
                                instead="DANet attaches its attention to a ResNet's "
                                        "last map"),
    "danet_channel": Placement("relation", True, "head", None,
                               "DANet paper Fig. 2: on the last feature map of the "
                               "(dilated) ResNet",
                               instead="DANet attaches its attention to a ResNet's "
                                       "last map"),
    "danet": Placement("relation", True, "head", None,
                       "DANet paper Fig. 2: both modules, summed, on the last feature "
                       "map of the (dilated) ResNet",
                       instead="DANet attaches its attention to a ResNet's last map"),
    "danet_head": Placement("block", False, None, None,
                            "junfu1115/DANet encoding/models/sseg/danet.py DANetHead: "
                            "the segmentation head on the dilated ResNet's last map "
                            "(2048 channels), in place of the classifier; it changes "
                            "the channel count",
                            instead="danet_head is a segmentation head (out_channels = "
                                    "classes): put it on a backbone's last feature map "
                                    "yourself"),
    "rga": Placement("relation", True, "stage_end_1_4", None,
                     "microsoft/Relation-Aware-Global-Attention-Networks "
                     "reid/models/rga_branches.py: RGA-SC after each of the four "
                     "stages",
                     instead="RGA follows the four stages of a ResNet-50"),
    "rga_spatial": Placement("relation", True, "stage_end_1_4", None,
                             "microsoft/Relation-Aware-Global-Attention-Networks "
                             "reid/models/rga_branches.py: after each of the four "
                             "stages",
                             instead="RGA follows the four stages of a ResNet-50"),
    "rga_channel": Placement("relation", True, "stage_end_1_4", None,
                             "microsoft/Relation-Aware-Global-Attention-Networks "
                             "reid/models/rga_branches.py: after each of the four "
                             "stages",
                             instead="RGA follows the four stages of a ResNet-50"),
    "scconv": Placement("block", False, None, None,
                        "SCNet: the self-calibrated half of SCBottleneck's 3x3 "
                        "convolution",
                        instead="scnet50() / scnet101() (scconv is a convolution "
                                "inside sc_bottleneck)"),
    "sc_bottleneck": Placement("block", False, None, None,
                               "SCNet: replaces every bottleneck of a ResNet",
                               instead="scnet50() / scnet101()"),
    "residual_attention": Placement("3-D", False, None, None,
                                    "Residual Attention Network: a stage module of "
                                    "Attention-56/92",
                                    instead="attention56() / attention92()"),
    "lka": Placement("block", False, None, None,
                     "VAN: the attention inside van_attention",
                     instead="van_b0() ... van_b3()"),
    "van_attention": Placement("block", False, None, None,
                               "VAN: the token mixer of each VAN block",
                               instead="van_b0() ... van_b3()"),
    "csra": Placement("classifier", False, None, None,
                      "Kevinz-code/CSRA pipeline/resnet_csra.py: the classifier on the "
                      "last feature map, in place of the global pooling and the fc "
                      "layer",
                      instead="CSRA on the backbone's last map in place of avgpool and "
                              "fc (it returns logits, not a map)"),
}


# --------------------------------------------------------------------------------------
# Looking up attention classes
# --------------------------------------------------------------------------------------

def _registry_class(name: str) -> type[nn.Module]:
    """The attn_lib class registered as ``name`` (attn_lib is imported here, when a
    network is built, so that this file imports only torch and the standard library)."""
    try:
        registry = importlib.import_module("attn_lib")
    except ImportError:  # this file was copied alone
        raise ValueError(f"attn_lib.models: the registry name {name!r} needs the "
                         "attn_lib package; pass the attention class itself "
                         "(attention=MyClass, placement=...)") from None
    return registry.get_class(name)


# Network name -> constructor; filled in below by each family of networks.
_NETWORKS: dict[str, Callable[..., nn.Module]] = {}


def available() -> list[str]:
    """The network names ``create`` accepts, sorted."""
    return sorted(_NETWORKS)


def create(network: str, **kwargs) -> nn.Module:
    """Build the network registered as ``network`` (e.g.
    ``create("resnet50", attention="se")``)."""
    if network not in _NETWORKS:
        raise ValueError(f"attn_lib.models: no network named {network!r}; available: "
                         f"{', '.join(available())}")
    return _NETWORKS[network](**kwargs)


# ---- begin: ResNets and MobileNetV2 (lead) ----
# ResNet positions, as the paper of each module places it (see PLACEMENT above).
_RESNET_BLOCK_POSITIONS = ("after_bn3", "after_conv2", "after_relu2", "spm")
_RESNET_STAGE_POSITIONS = {"stage_end_1_3": (1, 2, 3), "stage_end_1_4": (1, 2, 3, 4)}
_MOBILENET_POSITIONS = ("after_dw", "after_dw_conv", "block_end")


class _Attention:
    """What a network was asked to place: a class, where it goes, and its keyword
    arguments."""

    def __init__(self, network: str, attention, placement: Optional[str], kwargs: dict,
                 family: str):
        self.network, self.kwargs, self.family = network, dict(kwargs), family
        self.name = self.cls = self.position = None
        if attention is None:
            if kwargs:
                raise TypeError(f"attn_lib.models.{network}: attention keywords "
                                f"{sorted(kwargs)} were given without attention=")
            if placement is not None:
                raise TypeError(f"attn_lib.models.{network}: placement= was given "
                                "without attention=")
            return
        if isinstance(attention, str):
            if attention not in PLACEMENT:
                known = ", ".join(sorted(PLACEMENT))
                raise ValueError(f"attn_lib.models.{network}: no attention named "
                                 f"{attention!r}; choices: {known}")
            where = getattr(PLACEMENT[attention], family)
            if placement is not None and placement != where:
                raise ValueError(f"attn_lib.models.{network}: {attention!r} goes at "
                                 f"{where!r} ({PLACEMENT[attention].source}); "
                                 f"placement={placement!r} is only for attention "
                                 "classes that are not in the registry")
            if where is None:
                p = PLACEMENT[attention]
                raise ValueError(f"attn_lib.models.{network}: {attention!r} cannot go "
                                 f"in this network ({p.source}); use {p.instead}")
            self.name, self.cls, self.position = (
                attention, _registry_class(attention), where)
        elif isinstance(attention, type) and issubclass(attention, nn.Module):
            positions = _MOBILENET_POSITIONS if family == "mobilenet_v2" else \
                _RESNET_BLOCK_POSITIONS + tuple(_RESNET_STAGE_POSITIONS) + ("head",)
            if placement not in positions:
                raise ValueError(f"attn_lib.models.{network}: an attention class needs "
                                 f"placement= one of {positions}, got {placement!r}")
            self.name, self.cls, self.position = (
                attention.__name__, attention, placement)
        else:
            raise TypeError(f"attn_lib.models.{network}: attention must be a registry "
                            "name, an nn.Module class or None, got "
                            f"{type(attention).__name__}")

    def __bool__(self) -> bool:
        return self.cls is not None

    def build(self, channels: int, **extra) -> nn.Module:
        try:
            return self.cls(channels, **self.kwargs, **extra)
        except TypeError as error:
            raise TypeError(f"attn_lib.models.{self.network}: {self.name} does not "
                            f"take these keyword arguments {sorted(self.kwargs)}: "
                            f"{error}") from None

    def at(self, position: str, channels: int, **extra) -> Optional[nn.Module]:
        return (self.build(channels, **extra) if self and self.position == position
                else None)


def _check_image(network: str, x, image_size=None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{network} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        raise ValueError(f"{network} expects images of shape (B, 3, H, W) with B >= 1, "
                         f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{network} expects a floating-point tensor, got dtype "
                        f"{x.dtype}")
    if image_size is not None and tuple(x.shape[-2:]) != tuple(image_size):
        raise ValueError(f"{network} was built for {image_size[0]}x{image_size[1]} "
                         "images (its attention has a fixed map size at every "
                         f"stage), got {x.shape[-2]}x{x.shape[-1]}")


def _init_backbone(network: nn.Module, attention_modules) -> None:
    """torchvision's initialisation (convolutions Kaiming-normal over fan_out,
    BN 1 and 0) for the backbone only: every attention module keeps its own (official or
    paper) initialisation."""
    skip = {id(m) for a in attention_modules if a is not None for m in a.modules()}
    _kaiming_(m for m in network.modules() if id(m) not in skip)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class BasicBlock(nn.Module):
    """ResNet-18/34's residual block: 3x3 conv, BN, ReLU, 3x3 conv, BN,
    (attention), + shortcut, ReLU.

    Positions: "after_bn3" after the second BN; "after_conv2" after the second 3x3
    convolution (SimAM's code); "after_relu2"/"spm" after the first 3x3's BN and ReLU
    (PSA's code).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1,
                 base_width: int = 64, layout: str = "v1.5",
                 attention: Optional[nn.Module] = None, position: Optional[str] = None):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention, self.position = (
            attention, position if attention is not None else None)
        # registered after the attention, as timm's blocks
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.position in ("after_relu2", "spm"):
            out = self.attention(out)
        out = self.conv2(out)
        if self.position == "after_conv2":
            out = self.attention(out)
        out = self.bn2(out)
        if self.position == "after_bn3":
            out = self.attention(out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50/101's bottleneck: 1x1, 3x3, 1x1 convolutions with BN, (attention),
    + shortcut, ReLU.

    layout="v1.5" (torchvision's) puts the stride on the 3x3 convolution; "v1" (the
    original ResNet and the Caffe models that the SE, CBAM and BAM papers count) on the
    first 1x1.
    Positions: "after_bn3" after the last BN, before the addition (SE, CBAM, GC,
    Triplet); "after_conv2" after the 3x3 convolution, before its BN (SimAM's code);
    "after_relu2" and "spm" after the 3x3's BN and ReLU (PSA's code; SPNet's
    out * SPM(out)).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1,
                 base_width: int = 64, layout: str = "v1.5",
                 attention: Optional[nn.Module] = None, position: Optional[str] = None):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if layout == "v1" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride_3x3, 1, groups=groups,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.attention, self.position = (
            attention, position if attention is not None else None)
        # registered after the attention, as timm's blocks
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.position == "after_conv2":
            out = self.attention(out)
        out = self.relu(self.bn2(out))
        if self.position in ("after_relu2", "spm"):
            out = self.attention(out)
        out = self.bn3(self.conv3(out))
        if self.position == "after_bn3":
            out = self.attention(out)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet (He, Zhang, Ren, Sun, CVPR 2016) in torchvision's layout and parameter
    names, with attention placed where its paper places it.

    With attention=None the state dict has exactly torchvision's keys (conv1, bn1,
    layer1 ... layer4, fc), so torchvision's and timm's ResNet checkpoints load.
    Attention modules are the attribute ``attention`` of a block, ``attention1`` ...
    ``attention4`` after a stage, or ``head_attention`` after stage 4.

    Args:
        block: BasicBlock or Bottleneck.
        layers: the number of blocks of each of the four stages.
        attention: a registry name of attn_lib (placed as models.PLACEMENT says), an
            nn.Module class (then placement= is needed), or None.
        placement: the position of an attention class (registry names know theirs).
        layout: "v1.5" (torchvision: stride on the 3x3) or "v1" (the original: stride on
            the first 1x1).
        groups, width_per_group: ResNeXt's cardinality and width (32, 4 for
            resnext50_32x4d).
        num_classes: outputs of the classifier.
        image_size: (H, W) of the input images; needed by attention with a fixed map
            size (RGA), which is then built for each stage's size, and the network
            refuses other sizes.
        **attention_kwargs: keyword arguments of the attention module
            (variant= included).
    """

    def __init__(self, block, layers, *, attention=None,
                 placement: Optional[str] = None, layout: str = "v1.5", groups: int = 1,
                 width_per_group: int = 64, num_classes: int = 1000, image_size=None,
                 name: str = "ResNet", **attention_kwargs):
        super().__init__()
        if layout not in ("v1", "v1.5"):
            raise ValueError(f"attn_lib.models.{name}: layout must be 'v1' or 'v1.5', "
                             f"got {layout!r}")
        spec = _Attention(name, attention, placement, attention_kwargs, "resnet")
        self.name, self.layout, self.attention_name = name, layout, spec.name
        self.attention_position = spec.position
        needs_size = spec and "spatial_size" in _signature_names(spec.cls)
        if image_size is not None:
            image_size = _pair(name, image_size)
        if needs_size and image_size is None:
            raise ValueError(f"attn_lib.models.{name}: {spec.name} is built for one "
                             "map size; pass image_size=(H, W), the size of the "
                             "input images")
        self.image_size = image_size if needs_size else None
        sizes = None
        if image_size is not None:
            h, w = (_conv_out(_conv_out(s, 7, 2, 3), 3, 2, 1) for s in image_size)
            sizes = [(h, w)]
            for _ in range(3):
                h, w = _conv_out(h, 1, 2, 0), _conv_out(w, 1, 2, 0)
                sizes.append((h, w))
        self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stage_positions = _RESNET_STAGE_POSITIONS.get(spec.position, ())
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers),
                                                 start=1):
            stage = self._make_layer(block, planes, blocks, 1 if index == 1 else 2,
                                     spec, index == 4)
            setattr(self, f"layer{index}", stage)
            if index in stage_positions:
                extra = {"spatial_size": sizes[index - 1]} if needs_size else {}
                setattr(self, f"attention{index}", spec.build(self.inplanes, **extra))
        self.head_attention = spec.at("head", self.inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._stage_positions = stage_positions
        _init_backbone(self, self._attention_modules())

    def _make_layer(self, block, planes: int, blocks: int, stride: int,
                    spec: _Attention, last_stage: bool):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                          bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        width = (int(planes * (self.base_width / 64.0)) * self.groups
                 if block is Bottleneck else planes)
        layers = []
        for i in range(blocks):
            position = (spec.position if spec.position in _RESNET_BLOCK_POSITIONS
                        else None)
            if position == "spm" and not (last_stage or i == blocks - 1):
                # SPNet: the last block of stages 1-3, every block of stage 4
                position = None
            channels = planes * block.expansion if position == "after_bn3" else width
            module = spec.build(channels) if position else None
            layers.append(block(self.inplanes, planes, stride if i == 0 else 1,
                                downsample if i == 0 else None, self.groups,
                                self.base_width, self.layout, module, position))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def _attention_modules(self):
        found = [getattr(b, "attention", None)
                 for s in (self.layer1, self.layer2, self.layer3, self.layer4)
                 for b in s]
        found += ([getattr(self, f"attention{i}", None) for i in range(1, 5)]
                  + [self.head_attention])
        return [m for m in found if m is not None]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (B, 512 * expansion, H / 32, W / 32)."""
        _check_image(self.name, x, self.image_size)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            if index in self._stage_positions:
                x = getattr(self, f"attention{index}")(x)
        if self.head_attention is not None:
            x = self.head_attention(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))

    def extra_repr(self) -> str:
        return (f"attention={self.attention_name!r} at {self.attention_position!r}, "
                f"layout={self.layout!r}"
                if self.attention_name else f"attention=None, layout={self.layout!r}")


def _signature_names(cls) -> set:
    import inspect
    return set(inspect.signature(cls).parameters)


def _pair(network: str, size) -> tuple:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                       for s in size)):
        raise ValueError(f"attn_lib.models.{network}: image_size must be an int or "
                         f"(H, W) of positive ints, got {size!r}")
    return tuple(size)


def _resnet(name, block, layers, attention, kwargs, **fixed):
    return ResNet(block, layers, attention=attention, name=name, **fixed, **kwargs)


def resnet18(attention=None, **kwargs) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); keywords as ResNet (layout, num_classes,
    image_size, placement, and the attention module's own keywords)."""
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], attention, kwargs)


def resnet34(attention=None, **kwargs) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]); keywords as ResNet."""
    return _resnet("resnet34", BasicBlock, [3, 4, 6, 3], attention, kwargs)


def resnet50(attention=None, **kwargs) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); keywords as ResNet."""
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], attention, kwargs)


def resnet101(attention=None, **kwargs) -> ResNet:
    """ResNet-101 (Bottleneck, [3, 4, 23, 3]); keywords as ResNet."""
    return _resnet("resnet101", Bottleneck, [3, 4, 23, 3], attention, kwargs)


def resnext50_32x4d(attention=None, **kwargs) -> ResNet:
    """ResNeXt-50 32x4d (Xie et al., CVPR 2017): Bottleneck with 32 groups of width 4;
    keywords as ResNet."""
    return _resnet("resnext50_32x4d", Bottleneck, [3, 4, 6, 3], attention, kwargs,
                   groups=32, width_per_group=4)


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual (torchvision's layout and names): conv.0 the 1x1
    expansion (ConvBNReLU6, only when t > 1), then the depthwise 3x3 (ConvBNReLU6), the
    1x1 projection and its BN; the shortcut when the stride is 1 and the widths agree.

    Positions: "after_dw" after the depthwise conv's BN and ReLU6, in blocks with t > 1
    (Coordinate Attention's mbv2_ca.py); "after_dw_conv" after the depthwise
    convolution, before its BN (SimAM's code); "block_end" after the projection's BN
    (Triplet Attention's code).
    """

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 spec: "_Attention"):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [] if expand_ratio == 1 else [_conv_bn_relu6(inp, hidden, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.expand = expand_ratio != 1
        position = spec.position if spec else None
        if position == "after_dw" and not self.expand:
            position = None
        channels = oup if position == "block_end" else hidden
        self.attention = spec.build(channels) if position else None
        self.position = position
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv[0](x) if self.expand else x
        dw = self.conv[1] if self.expand else self.conv[0]
        out = dw[0](out)
        if self.position == "after_dw_conv":
            out = self.attention(out)
        out = dw[2](dw[1](out))
        if self.position == "after_dw":
            out = self.attention(out)
        out = self.conv[-1](self.conv[-2](out))
        if self.position == "block_end":
            out = self.attention(out)
        return x + out if self.use_res_connect else out


def _conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov, Chen, CVPR 2018) in torchvision's
    layout and parameter names (features.0 ... features.18, classifier.1), width
    multiplier 1, with attention where its paper or official code places it (see
    InvertedResidual).

    Args:
        attention: a registry name (placed as models.PLACEMENT says), an nn.Module class
            (with placement=), or None.
        placement: the position of an attention class.
        num_classes: outputs of the classifier.
        dropout: the classifier's dropout (torchvision 0.2; Coordinate Attention's
            mbv2_ca.py 0.1).
        **attention_kwargs: keyword arguments of the attention module
            (variant= included).
    """

    # t, c, n, s: expansion, output channels, blocks, first stride (the paper's Table 2)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, *, attention=None, placement: Optional[str] = None,
                 num_classes: int = 1000, dropout: float = 0.2,
                 name: str = "mobilenet_v2", **attention_kwargs):
        super().__init__()
        spec = _Attention(name, attention, placement, attention_kwargs, "mobilenet_v2")
        self.name, self.attention_name, self.attention_position = (
            name, spec.name, spec.position)
        features = [_conv_bn_relu6(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t, spec))
                inp = c
        features.append(_conv_bn_relu6(inp, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout),
                                        nn.Linear(1280, num_classes))
        _init_backbone(self, [getattr(f, "attention", None) for f in features])
        nn.init.normal_(self.classifier[1].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(self.name, x)
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))

    def extra_repr(self) -> str:
        return f"attention={self.attention_name!r} at {self.attention_position!r}"


def mobilenet_v2(attention=None, **kwargs) -> MobileNetV2:
    """MobileNetV2 (torchvision's layout); keywords as MobileNetV2."""
    return MobileNetV2(attention=attention, **kwargs)


_NETWORKS.update({"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
                  "resnet101": resnet101, "resnext50_32x4d": resnext50_32x4d,
                  "mobilenet_v2": mobilenet_v2})
# ---- end: ResNets and MobileNetV2 (lead) ----


# ---- begin: VAN, SCNet, Residual Attention Network (helper) ----
# Networks built from the modules that are whole blocks: VAN (van_attention), SCNet
# (sc_bottleneck) and the Residual Attention Network (residual_attention). Each network
# takes variant= (given to every attention module it builds) and the module's other
# keywords; the keywords a network sets itself (channels, strides, depths) are refused,
# as are unknown ones.

def _block_kwargs(network: str, name: str, kwargs: dict, fixed: tuple) -> tuple:
    """The registry class ``name`` and ``kwargs`` checked against its constructor: a
    TypeError names the network for a keyword the class does not take or that the
    network sets itself."""
    import inspect

    cls = _registry_class(name)
    params = inspect.signature(cls).parameters
    takes = [k for k, p in params.items() if k != "channels"
             and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    passed = sorted(set(takes) - set(fixed) - {"variant"})
    for key in kwargs:
        if key in fixed:
            raise TypeError(f"attn_lib.models.{network}: {key}= is set by the network "
                            f"for each {name} module; the keywords it passes on are "
                            f"{passed}")
        if key not in takes and not any(p.kind == p.VAR_KEYWORD
                                        for p in params.values()):
            raise TypeError(f"attn_lib.models.{network}() got an unexpected keyword "
                            f"argument {key!r}; besides its own (variant, num_classes, "
                            "device, dtype, ...) it passes on the keywords of "
                            f"{name}: {passed}")
    return cls, dict(kwargs)


def _factory(device):
    """The device context a network is built in (device=None: the current default)."""
    import contextlib

    return torch.device(device) if device is not None else contextlib.nullcontext()


def _kaiming_(modules) -> None:
    """Convolutions Kaiming-normal over fan_out (ReLU gain), BatchNorm
    weight 1 and bias 0."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------- VAN

class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability p
    and scale the kept ones by 1 / (1 - p); the identity in eval mode or at p = 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _DWConv(nn.Module):
    """The MLP's depth-wise 3x3 convolution (a submodule named dwconv, as
    the official DWConv)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class VANMlp(nn.Module):
    """fc2(GELU(DWConv3x3(fc1(x)))): 1x1 to the hidden width, depth-wise 3x3, GELU,
    1x1 back."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = _DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class VANBlock(nn.Module):
    """x + DropPath(gamma_1 * Attention(BN(x))), then
    x + DropPath(gamma_2 * MLP(BN(x))).

    gamma_1, gamma_2: per-channel layer scales (layer_scale_1, layer_scale_2), 0.01
    at start;
    Attention: the registry's van_attention block (variant="paper": no shortcut inside,
    "official": the released Attention with its + x)."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float,
                 attention: nn.Module):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = attention
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = VANMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None]
                               * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None]
                                  * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """A k x k convolution with stride s and padding k // 2 (overlapping patches),
    then BN."""

    def __init__(self, in_channels: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride=stride,
                              padding=kernel // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


def _van_init_(m: nn.Module) -> None:
    """The official VAN._init_weights: Linear N(0, 0.02) truncated at +-2, bias 0;
    LayerNorm 1, 0; Conv2d N(0, 2 / fan_out) with fan_out = k_h k_w C_out / groups,
    bias 0."""
    import math

    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class VAN(nn.Module):
    """Visual Attention Network (Guo, Lu, Liu, Cheng, Hu; arXiv:2202.09741, CVMJ 2023).

    Four stages; stage i is an overlapping patch embedding (7x7 stride 4, then 3x3
    stride 2), depths[i] VAN blocks of width dims[i] (BN, van_attention, layer scale,
    BN, MLP with a depth-wise 3x3 convolution and hidden width mlp_ratios[i] * dims[i])
    and a LayerNorm over channels (eps 1e-6); the head averages the last stage's tokens
    and applies a Linear layer.

    The submodules and parameters have the names and the order of the official VAN
    (Visual-Attention-Network/VAN-Classification models/van.py at e19779b):
    patch_embed1, block1, norm1, ..., head; in a block layer_scale_1, layer_scale_2,
    norm1, attn.proj_1, attn.spatial_gating_unit.conv0, ..., mlp.fc1, mlp.dwconv.dwconv,
    mlp.fc2. A released checkpoint's "state_dict" loads with load_state_dict (strict)
    into variant="official", which computes what the released network computes.
    """

    def __init__(self, dims, depths, mlp_ratios, *, name: str = "VAN",
                 variant: str = "paper", num_classes: int = 1000,
                 drop_path_rate: float = 0.0, attention_kwargs=None, device=None,
                 dtype=None):
        super().__init__()
        cls, kwargs = _block_kwargs(name, "van_attention", dict(attention_kwargs or {}),
                                    ("device", "dtype"))
        self.name, self.variant, self.num_stages = name, variant, len(dims)
        with _factory(device):
            self._build(cls, kwargs, dims, depths, mlp_ratios, variant, num_classes,
                        drop_path_rate)
        if dtype is not None:
            self.to(dtype=dtype)

    def _build(self, cls, kwargs, dims, depths, mlp_ratios, variant, num_classes,
               drop_path_rate) -> None:
        n = sum(depths)
        # linspace(0, rate, n)
        rates = [drop_path_rate * j / (n - 1) if n > 1 else 0.0 for j in range(n)]
        attention_modules, k = [], 0
        for i, (dim, depth, ratio) in enumerate(zip(dims, depths, mlp_ratios)):
            embed = OverlapPatchEmbed(3 if i == 0 else dims[i - 1], dim,
                                      7 if i == 0 else 3, 4 if i == 0 else 2)
            blocks = nn.ModuleList()
            for _ in range(depth):
                attn = cls(dim, variant=variant, **kwargs)
                attention_modules.append(attn)
                blocks.append(VANBlock(dim, ratio, rates[k], attn))
                k += 1
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim, eps=1e-6))
        self.head = (nn.Linear(dims[-1], num_classes) if num_classes > 0
                     else nn.Identity())
        # the official initialisation for everything but the attention blocks, which
        # keep their variant's (official: the same N(0, 2 / fan_out); paper: PyTorch's
        # default)
        skip = {id(m) for a in attention_modules for m in a.modules()}
        for m in self.modules():
            if id(m) not in skip:
                _van_init_(m)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, dims[-1]): the last stage's tokens,
        normalised and averaged."""
        _check_image(self.name, x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            b, c, h, w = x.shape
            # (B, HW, C)
            tokens = getattr(self, f"norm{i}")(x.flatten(2).transpose(1, 2))
            if i == self.num_stages:
                return tokens.mean(1)
            x = tokens.transpose(1, 2).reshape(b, c, h, w)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


_VAN_DOC = """{title} of the Visual Attention Network (Guo et al., arXiv:2202.09741),
built from the registry's van_attention block: widths {dims}, depths {depths}, MLP
ratios (8, 8, 4, 4).

Official code: Visual-Attention-Network/VAN-Classification models/van.py at commit
e19779b53a1b0828b51ecb4412d577541aee83a7 ({official}); the state_dict keys and their
order are the official ones, so the released checkpoint ({checkpoint}, its "state_dict")
loads strictly.

Args:
    variant: "paper" (default): the attention block as the paper's equations write it,
        proj_2(LKA(GELU(proj_1(x)))) with no shortcut inside (the block keeps its own
        residual x + layer_scale * ...); the parameters are the same, so the count is
        unchanged. "official": the released Attention, proj_2(...) + x, initialised as
        the official VAN: the function of the released checkpoints (load them into this
        variant).
    num_classes: classes of the head (1000).
    drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
    device, dtype: where and in which floating dtype the parameters are made (PyTorch's
        factory keywords; "meta" builds without memory, e.g. to count parameters).
    **attention_kwargs: the other keywords of van_attention (kernel_size K = 21,
        dilation d = 3).

Parameters: {exact:,} (either variant, num_classes=1000) = {printed}M, the figure
printed for this variant in the VAN paper's table (as quoted to us; the PDF was not read
here).
"""


def van_b0(*, variant: str = "paper", num_classes: int = 1000,
           drop_path_rate: float = 0.0, device=None, dtype=None,
           **attention_kwargs) -> VAN:
    return VAN((32, 64, 160, 256), (3, 3, 5, 2), (8, 8, 4, 4), name="van_b0",
               variant=variant, num_classes=num_classes, drop_path_rate=drop_path_rate,
               attention_kwargs=attention_kwargs, device=device, dtype=dtype)


def van_b1(*, variant: str = "paper", num_classes: int = 1000,
           drop_path_rate: float = 0.0, device=None, dtype=None,
           **attention_kwargs) -> VAN:
    return VAN((64, 128, 320, 512), (2, 2, 4, 2), (8, 8, 4, 4), name="van_b1",
               variant=variant, num_classes=num_classes, drop_path_rate=drop_path_rate,
               attention_kwargs=attention_kwargs, device=device, dtype=dtype)


def van_b2(*, variant: str = "paper", num_classes: int = 1000,
           drop_path_rate: float = 0.0, device=None, dtype=None,
           **attention_kwargs) -> VAN:
    return VAN((64, 128, 320, 512), (3, 3, 12, 3), (8, 8, 4, 4), name="van_b2",
               variant=variant, num_classes=num_classes, drop_path_rate=drop_path_rate,
               attention_kwargs=attention_kwargs, device=device, dtype=dtype)


def van_b3(*, variant: str = "paper", num_classes: int = 1000,
           drop_path_rate: float = 0.0, device=None, dtype=None,
           **attention_kwargs) -> VAN:
    return VAN((64, 128, 320, 512), (3, 5, 27, 3), (8, 8, 4, 4), name="van_b3",
               variant=variant, num_classes=num_classes, drop_path_rate=drop_path_rate,
               attention_kwargs=attention_kwargs, device=device, dtype=dtype)


# ---------------------------------------------------------------------------- SCNet

class SCNet(nn.Module):
    """SCNet (Liu, Hou, Cheng, Wang, Feng, CVPR 2020): a ResNet whose bottlenecks are
    all the registry's sc_bottleneck (SCBottleneck: two 1x1 halves, K1 on one, the
    self-calibrated convolution on the other, 1x1 conv3 + BN, shortcut).

    Layout of MCG-NKU/SCNet scnet.py (commit c0b5bd6aa919c00afb5815b2810e645e6a4a5976),
    the SCNet-50/101 configuration (not _v1d): 7x7 convolution stride 2 (conv1, bn1,
    ReLU), 3x3 max pool stride 2 padding 1, layer1..layer4 of SCBottlenecks
    (widths 64, 128, 256, 512 times 4; the stride on K1 and K4 of each stage's first
    block, strides 1, 2, 2, 2; a 1x1 convolution + BN shortcut where the shape changes),
    global average pooling, fc. Names and order are the official ones (conv1, bn1,
    layer1.0.conv1_a, ..., layer1.0.downsample.0, ..., fc), so the released weights
    (scnet.py's model_urls) load strictly. Initialisation as the official constructor:
    every convolution Kaiming-normal (fan_out, ReLU), every BatchNorm 1 and 0.
    """

    def __init__(self, layers, *, name: str = "SCNet", variant: str = "paper",
                 num_classes: int = 1000, attention_kwargs=None, device=None,
                 dtype=None):
        super().__init__()
        cls, kwargs = _block_kwargs(name, "sc_bottleneck", dict(attention_kwargs or {}),
                                    ("out_channels", "stride", "device", "dtype"))
        self.name, self.variant = name, variant
        with _factory(device):
            self._build(cls, kwargs, layers, variant, num_classes)
        if dtype is not None:
            self.to(dtype=dtype)

    def _build(self, cls, kwargs, layers, variant, num_classes) -> None:
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(cls(channels, out_channels=4 * width,
                                  stride=2 if (i > 0 and j == 0) else 1,
                                  variant=variant, **kwargs))
                channels = 4 * width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _kaiming_(self.modules())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 2048, H / 32, W / 32)
        (sizes rounded up at each stride)."""
        _check_image(self.name, x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


_SCNET_DOC = """{title} (Liu et al., "Improving Convolutional Networks with
Self-Calibrated Convolutions", CVPR 2020): a ResNet-{depth} layout {layers} whose every
bottleneck is the registry's sc_bottleneck. Official code: MCG-NKU/SCNet scnet.py
({official}) at commit c0b5bd6aa919c00afb5815b2810e645e6a4a5976; keys and order are the
official ones, so its released ImageNet weights (model_urls['{official}']) load
strictly.

Args:
    variant: "paper" (default: the calibration's Up is bilinear, as the paper
        describes) or "official" (nearest, F.interpolate's default in the released
        code: the function of the released weights). The parameters are the same in
        both.
    num_classes: classes of the fc layer (1000).
    device, dtype: where and in which floating dtype the parameters are made.
    **attention_kwargs: the other keywords of sc_bottleneck (pooling_r r = 4,
        ceil_mode); out_channels and stride are set by the network.

Parameters: {exact:,} (either variant, num_classes=1000); {printed}.
"""


def scnet50(*, variant: str = "paper", num_classes: int = 1000, device=None,
            dtype=None, **attention_kwargs) -> SCNet:
    return SCNet((3, 4, 6, 3), name="scnet50", variant=variant,
                 num_classes=num_classes, attention_kwargs=attention_kwargs,
                 device=device, dtype=dtype)


def scnet101(*, variant: str = "paper", num_classes: int = 1000, device=None,
             dtype=None, **attention_kwargs) -> SCNet:
    return SCNet((3, 4, 23, 3), name="scnet101", variant=variant,
                 num_classes=num_classes, attention_kwargs=attention_kwargs,
                 device=device, dtype=dtype)


# ------------------------------------------------------------------- Residual Attention

class PreActUnit(nn.Module):
    """A pre-activation bottleneck residual unit that may change width and stride:
    a = ReLU(bn1(x)); out = conv3(ReLU(bn3(conv2(ReLU(bn2(conv1(a))))))) + shortcut,
    where shortcut = downsample(a) (a strided 1x1 convolution) when the shape changes,
    else x.

    As the Caffe units pre_res_1 ... post_res_4_3 of Attention-56-deploy.prototxt: width
    C_out / 4 inside, the stride on the 3x3 convolution (conv2_3x3) and on the 1x1
    projection (branch2/conv1_1x1), which reads the unit's normalised input; no
    biases."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        hidden = out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                                        bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv1(a)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(a))


class ResidualAttentionNetwork(nn.Module):
    """Residual Attention Network (Wang et al., CVPR 2017, arXiv:1704.06904) for
    ImageNet.

    Layout of fwang91/residual-attention-network
    imagenet_model/Attention-{56,92}-deploy.prototxt (commit
    bc207a8885168550723d19270f52c8c9c795c7ba): conv1 7x7/2 (64, no bias), BN, ReLU, 3x3
    max pool stride 2; stage 1: a unit 64 -> 256 and m1 attention modules (256 channels,
    3 pooling levels in the mask); stage 2: a unit 256 -> 512 with stride 2 and m2
    modules (2 levels); stage 3: a unit 512 -> 1024 with stride 2 and m3 modules
    (1 level); stage 4: a unit 1024 -> 2048 with stride 2 and two more units; BN, ReLU,
    average pooling, fc. Attention-56 has (m1, m2, m3) = (1, 1, 1), Attention-92
    (1, 2, 3). Units are pre-activation bottlenecks (PreActUnit); each attention module
    is the registry's residual_attention (p = 1, t = 2, r = 1), which also holds the
    units before and after its two branches.

    variant="official" gives the Caffe max pools (no padding, output size rounded up) in
    the stem and in every mask branch; "paper" pads them by one. At 224 x 224 both give
    56 x 56 after the stem and the same map sizes (56, 28, 14, 7) everywhere. The Caffe
    head averages a 7 x 7 window (ave_pool, kernel 7, stride 1); here the pooling is
    global, the same at 224 x 224 and defined at every size. No weights were released;
    the initialisation (Kaiming-normal fan_out for every convolution, BatchNorm 1 and 0)
    is our choice: the deploy files do not give one.
    """

    def __init__(self, modules_per_stage, *, name: str = "ResidualAttentionNetwork",
                 variant: str = "paper", num_classes: int = 1000, attention_kwargs=None,
                 device=None, dtype=None):
        super().__init__()
        cls, kwargs = _block_kwargs(name, "residual_attention",
                                    dict(attention_kwargs or {}),
                                    ("depth", "device", "dtype"))
        self.name, self.variant = name, variant
        with _factory(device):
            self._build(cls, kwargs, modules_per_stage, variant, num_classes)
        if dtype is not None:
            self.to(dtype=dtype)

    def _build(self, cls, kwargs, modules_per_stage, variant, num_classes) -> None:
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        if variant == "official":
            # Caffe: no pad, rounded up
            self.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for i, (width, depth, m) in enumerate(zip((256, 512, 1024), (3, 2, 1),
                                                  modules_per_stage)):
            stage = [PreActUnit(channels, width, stride=1 if i == 0 else 2)]
            stage += [cls(width, depth=depth, variant=variant, **kwargs)
                      for _ in range(m)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            channels = width
        self.layer4 = nn.Sequential(PreActUnit(1024, 2048, stride=2),
                                    PreActUnit(2048, 2048), PreActUnit(2048, 2048))
        self.bn_final = nn.BatchNorm2d(2048)  # Caffe: post_res_4_3/bn, ReLU
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        _kaiming_(self.modules())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 2048, H', W'): the last map, after the final BN and
        ReLU."""
        _check_image(self.name, x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.relu(self.bn_final(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


def attention56(*, variant: str = "paper", num_classes: int = 1000, device=None,
                dtype=None, **attention_kwargs) -> ResidualAttentionNetwork:
    return ResidualAttentionNetwork(
        (1, 1, 1), name="attention56", variant=variant, num_classes=num_classes,
        attention_kwargs=attention_kwargs, device=device, dtype=dtype)


def attention92(*, variant: str = "paper", num_classes: int = 1000, device=None,
                dtype=None, **attention_kwargs) -> ResidualAttentionNetwork:
    return ResidualAttentionNetwork(
        (1, 2, 3), name="attention92", variant=variant, num_classes=num_classes,
        attention_kwargs=attention_kwargs, device=device, dtype=dtype)


_RAN_DOC = """{title}: the Residual Attention Network of Wang et al. (CVPR 2017,
arXiv:1704.06904) with {modules} attention modules (the registry's residual_attention,
mixed attention, p = 1, t = 2, r = 1) in stages 1-3; layout of
fwang91/residual-attention-network imagenet_model/{deploy} at commit
bc207a8885168550723d19270f52c8c9c795c7ba (see ResidualAttentionNetwork).

Args:
    variant: "paper" (default: max pools padded by one) or "official" (the Caffe pools:
        no padding, output size rounded up; needs sides of at least 2 ** depth before
        every mask branch). At 224 x 224 the two give the same map sizes; the parameters
        are the same.
    num_classes: classes of the fc layer (1000).
    device, dtype: where and in which floating dtype the parameters are made.
    **attention_kwargs: the other keywords of residual_attention (p, t, r, attention,
        eps); depth is set by the network (3, 2, 1 in stages 1, 2, 3).

Parameters: {exact:,} (num_classes=1000), exactly the learned blobs of the Caffe deploy
file (convolutions, BN slopes and biases, the classifier). {printed}
"""

van_b0.__doc__ = _VAN_DOC.format(
    title="VAN-B0", dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), official="van_b0",
    checkpoint="van_tiny_754.pth.tar", printed="4.1", exact=4_105_800)
van_b1.__doc__ = _VAN_DOC.format(
    title="VAN-B1", dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), official="van_b1",
    checkpoint="van_small_811.pth.tar", printed="13.9", exact=13_861_800)
van_b2.__doc__ = _VAN_DOC.format(
    title="VAN-B2", dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), official="van_b2",
    checkpoint="van_base_828.pth.tar", printed="26.6", exact=26_578_472)
van_b3.__doc__ = _VAN_DOC.format(
    title="VAN-B3", dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), official="van_b3",
    checkpoint="van_large_839.pth.tar", printed="44.8", exact=44_765_608)
scnet50.__doc__ = _SCNET_DOC.format(
    title="SCNet-50", depth=50, layers=(3, 4, 6, 3), official="scnet50",
    printed="the official README prints 25.56M,\n"
            "the figure quoted to us for the paper's table", exact=25_564_584)
scnet101.__doc__ = _SCNET_DOC.format(
    title="SCNet-101", depth=101, layers=(3, 4, 23, 3), official="scnet101",
    printed="the official README prints\n"
            "44.57M (a count for SCNet-101 in the CVPR paper is unverified here)",
    exact=44_565_416)
attention56.__doc__ = _RAN_DOC.format(
    title="Attention-56", modules="1, 1, 1", deploy="Attention-56-deploy.prototxt",
    exact=31_810_728,
    printed="The paper's count is 31.9M (as quoted to us;\n"
            "the PDF was not read here). This count rounds to 31.8M; with the 72,704 "
            "BatchNorm\n"
            "running statistics, which the authors' Caffe BN layer stores as blobs "
            "beside its slopes and\n"
            "biases, it is 31,883,432 = 31.9M. FLOPs: 6.27 G multiply-adds at "
            "224 x 224\n"
            "(torch.utils.flop_counter: convolutions and the fc layer).")
attention92.__doc__ = _RAN_DOC.format(
    title="Attention-92", modules="1, 2, 3", deploy="Attention-92-deploy.prototxt",
    exact=52_466_344,
    printed="A count of 51.3M is quoted for\n"
            "Attention-92 (unverified against the paper); the deploy file, and this "
            "network, have 52.5M\n"
            "(52.6M with the BN statistics): the two disagree, and we do not know why.")

_NETWORKS.update({"van_b0": van_b0, "van_b1": van_b1, "van_b2": van_b2,
                  "van_b3": van_b3, "scnet50": scnet50, "scnet101": scnet101,
                  "attention56": attention56, "attention92": attention92})
# ---- end: VAN, SCNet, Residual Attention Network (helper) ----
