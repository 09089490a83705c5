"""The Coordinate Attention chapter's assignment: its questions, its grading helpers and its broken
submissions.

Read by tools/assignments.py (see its docstring for the format)."""

CHECKS = ("check_coord_attention_matches_formula", "check_strips_are_directional_means",
          "check_gates_separate_directions", "check_attention_is_rank_one",
          "check_width_and_official_code")

SPEC = {
    "module": "coord_attention",
    # The step-by-step cells of "One equation, one cell" are the formulas the student writes the
    # module from, and the official forward is part of the exported checks: nothing to remove.
    "remove": [],
    "questions": [
        {
            "name": "coord_attention_module",
            "label": None,
            "cell": "class CoordAttention(nn.Module):",
            "stub": ["CoordAttention.embed", "CoordAttention.split", "CoordAttention.to_row",
                     "CoordAttention.gates", "CoordAttention.forward"],
            "prompt": (
                "**Write the module (13 points).** In the cell below, write the bodies of "
                "`CoordAttention.embed`, `CoordAttention.split`, `CoordAttention.to_row`, "
                "`CoordAttention.gates` and `CoordAttention.forward` (which returns "
                "$Y = X s^h s^w$), as their docstrings and the equations above say, in both "
                "variants and for every activation. The constructor is given: keep the attribute "
                "names, the tests copy weights into them. Public test: the output shape on a "
                "non-square map (1 point). Hidden tests: the chapter's five derivation checks on "
                "`CoordAttention(12, reduction=3)` in both variants (2 points each) and equality "
                "with the reference module under copied weights, with `activation=\"relu\"`, in "
                "both variants (2 points)."),
            "args": "CoordAttention",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'CoordAttention(16, reduction=4) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(CoordAttention(16, reduction=4), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: CoordAttention(12, reduction=3, variant=variant))")
                  for name in CHECKS],
                ("reference", 2, True,
                 "G.compare_with_reference('CoordAttention', CoordAttention, "
                 "dict(channels=12, reduction=3, activation='relu'), (2, 5, 7))"),
            ],
        },
        {
            "name": "separate",
            "label": "coord_attention-ex-separate",
            "stub": ["CoordAttentionSeparate", "extra_params", "rejected_by"],
            "args": "CoordAttentionSeparate, extra_params, rejected_by",
            "tests": [
                ("separate_gates", 2, True, "G.compare_separate(CoordAttentionSeparate)"),
                # official width k = max(8, 64 // 32) = 8: Conv_{1,w} has 64 k weights and k biases,
                # BN_w k scales and k shifts
                ("extra_params", 1, True,
                 "G.run('extra_params', 'a second Conv_1 (64 * 8 weights, 8 biases) and BN (8 + 8) at C = 64', "
                 "lambda: G.assert_equal(extra_params, 64 * max(8, 64 // 32) + 3 * max(8, 64 // 32)))"),
                # the formula check sees the unshared transform, the layout check the extra tensors;
                # each gate still depends on one profile only, so the other three accept it
                ("rejected_by", 1, True,
                 "G.run('rejected_by', 'the checks that reject a separate transform per direction', "
                 "lambda: G.assert_equal(rejected_by, {'check_coord_attention_matches_formula', "
                 "'check_width_and_official_code'}))"),
            ],
        },
        {
            "name": "chunk",
            "label": "coord_attention-ex-chunk",
            "stub": ["CoordAttentionChunk", "agrees"],
            "args": "CoordAttentionChunk, agrees",
            "tests": [
                ("chunk_split", 1, True, "G.check_chunk_split(CoordAttentionChunk)"),
                # chunk's first part has ceil((H + W) / 2) positions: H exactly when H = W or H = W + 1
                ("agrees", 2, True,
                 "G.run('agrees', 'the chunk port is right exactly when ceil((H + W) / 2) = H', "
                 "lambda: G.assert_equal(agrees, {(h, w): -(-(h + w) // 2) == h for h, w in "
                 "[(7, 7), (7, 9), (9, 7), (8, 7), (7, 8), (6, 5)]}))"),
            ],
        },
        {
            "name": "min_width",
            "label": "coord_attention-ex-min-width",
            "stub": ["first_c", "first_c_by_r"],
            "args": "first_c, first_c_by_r",
            "tests": [
                ("first_c_by_r", 1, True,
                 "G.run('first_c_by_r', 'the first C with max(8, C // r) = C // r, for r = 32 and 16', "
                 "lambda: G.assert_equal(first_c_by_r, {r: G.brute_first_c(8, r) for r in (32, 16)}))"),
                ("first_c", 1, True, "G.check_first_c(first_c)"),
            ],
        },
        {
            "name": "rectangle",
            "label": "coord_attention-ex-rectangle",
            "stub": ["hand_built", "two", "amap"],
            "args": "hand_built, amap",
            "tests": [
                ("hand_built", 2, True, "G.check_hand_built(hand_built)"),
                ("amap", 1, True, "G.check_amap(amap)"),
            ],
        },
        {
            "name": "check_shared",
            "label": "coord_attention-ex-check-shared",
            "stub": ["check_transform_is_shared"],
            "args": "check_transform_is_shared",
            "tests": [
                ("accepts_coord_attention", 1, True,
                 "G.expect_accepts(check_transform_is_shared, 'CoordAttention')"),
                ("rejects_separate_transforms", 1, True,
                 "G.expect_rejects(check_transform_is_shared, 'separate-transforms')"),
                ("rejects_split_w_h", 1, True,
                 "G.expect_rejects(check_transform_is_shared, 'split-w-h')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, rebased, ...).
HELPERS = '''
import math

from torch.nn import functional as F


@contextlib.contextmanager
def _on_reference_base(student_cls):
    """The student's subclass with the reference CoordAttention as its base (graded apart from the
    student's own module; super() in its methods then reaches the reference)."""
    saved = student_cls.__bases__
    student_cls.__bases__ = (reference().CoordAttention,)
    try:
        yield student_cls
    finally:
        student_cls.__bases__ = saved


def _h_swish(t):
    return t * torch.clamp(t + 3, 0, 6) / 6


def _conv(conv, t):
    """A 1x1 convolution as a matrix product over the channel axis (k from c)."""
    out = torch.einsum("kc,bc...->bk...", conv.weight[:, :, 0, 0], t)
    if conv.bias is not None:
        out = out + conv.bias.reshape(1, -1, *([1] * (t.dim() - 2)))
    return out


def _bn(bn, t):
    """BatchNorm in evaluation form, per channel k of (B, K, P)."""
    shape = (1, -1, 1)
    std = torch.sqrt(bn.running_var.reshape(shape) + bn.eps)
    return (t - bn.running_mean.reshape(shape)) / std * bn.weight.reshape(shape) + bn.bias.reshape(shape)


def compare_separate(student_cls):
    def compare():
        assert {"__init__", "gates"} <= set(vars(student_cls)), \\
            "CoordAttentionSeparate does not define __init__ and gates"
        with _on_reference_base(student_cls):
            for variant in ("paper", "official"):
                g = torch.Generator().manual_seed(7)
                mine = student_cls(12, reduction=3, variant=variant).double().eval()
                for name in ("conv1_w", "bn1_w"):
                    assert isinstance(getattr(mine, name, None), torch.nn.Module), f"no {name}"
                assert (mine.conv1_w.bias is not None) == (variant == "official"), \\
                    "conv1_w has a bias exactly in the official variant"
                _randomise(mine, g)
                x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
                with torch.no_grad():
                    z_h, z_w = x.mean(3), x.mean(2)                      # (B, C, H), (B, C, W)
                    f_h = _h_swish(_bn(mine.bn1, _conv(mine.conv1, z_h)))
                    f_w = _h_swish(_bn(mine.bn1_w, _conv(mine.conv1_w, z_w)))
                    s_h = torch.sigmoid(_conv(mine.conv_h, f_h))[..., :, None]   # (B, C, H, 1)
                    s_w = torch.sigmoid(_conv(mine.conv_w, f_w))[..., None, :]   # (B, C, 1, W)
                    got_h, got_w = mine.gates(x)
                    torch.testing.assert_close(got_h, s_h, rtol=1e-10, atol=1e-12)
                    torch.testing.assert_close(got_w, s_w, rtol=1e-10, atol=1e-12)
                    torch.testing.assert_close(mine(x), x * s_h * s_w, rtol=1e-10, atol=1e-12)
    run("CoordAttentionSeparate",
        "gates from Conv_1, BN for the rows and Conv_{1,w}, BN_w for the columns", compare)


def check_chunk_split(student_cls):
    def compare():
        mine = rebased(student_cls, reference().CoordAttention, ["split"])(12, reduction=3)
        g = torch.Generator().manual_seed(8)
        for h, w in [(7, 9), (8, 7), (6, 6)]:
            f = torch.randn(2, 4, h + w, 1, generator=g, dtype=torch.float64)
            first = -(-(h + w) // 2)                         # torch.chunk: ceil(n / 2) first
            f_h, f_w = mine.split(f, h, w)
            torch.testing.assert_close(f_h, f[:, :, :first], rtol=0, atol=0)
            torch.testing.assert_close(f_w, f[:, :, first:], rtol=0, atol=0)
    run("CoordAttentionChunk.split", "two halves of f: ceil((H + W) / 2) positions, then the rest",
        compare)


def brute_first_c(m, r):
    return next(c for c in range(1, m * r + 2) if max(m, c // r) == c // r)


def check_first_c(fn):
    def compare():
        for m in (1, 2, 3, 8, 9):
            for r in (1, 4, 7, 16, 32):
                got = fn(m, r)
                assert got == brute_first_c(m, r), f"first_c({m}, {r}) = {got!r}"
    run("first_c", "the smallest C with max(m, C // r) = C // r, on a grid of m and r", compare)


def _hand_gates(x, threshold, gain):
    """sigma(gain * h_swish(profile - threshold)) for the rows and columns of a one-channel map."""
    z_h, z_w = x.mean(3), x.mean(2)
    return (torch.sigmoid(gain * _h_swish(z_h - threshold))[..., :, None],
            torch.sigmoid(gain * _h_swish(z_w - threshold))[..., None, :])


def check_hand_built(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(9)
        for threshold, gain in [(0.1, 100.0), (0.3, 7.0)]:
            with _reference_global(fn, "CoordAttention", ref.CoordAttention):    # apart from your module
                block = fn(threshold, gain)
            assert getattr(block, "variant", None) == "paper", "not a paper-variant CoordAttention"
            assert block.channels == 1 and block.hidden == 1, \\
                "not CoordAttention(1, reduction=1, min_width=1)"
            assert not block.training, "the block is not in evaluation mode"
            x = torch.rand(1, 1, 6, 9, generator=g, dtype=torch.float64)
            with torch.no_grad():
                s_h, s_w = copy.deepcopy(block).double().gates(x)
            want_h, want_w = _hand_gates(x, threshold, gain)
            # the block holds float32 numbers (t, 1 - eps): float32 tolerances
            torch.testing.assert_close(s_h, want_h, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(s_w, want_w, rtol=1e-5, atol=1e-7)
    run("hand_built", "gates sigma(g h_swish(profile - t)) at (t, g) = (0.1, 100) and (0.3, 7)",
        compare)


def check_amap(amap):
    def compare():
        two = torch.zeros(1, 1, 24, 40, dtype=torch.float64)
        two[..., 2:8, 2:10] = 1.0
        two[..., 16:22, 28:36] = 1.0
        s_h, s_w = _hand_gates(two, 0.1, 100.0)
        assert torch.is_tensor(amap), f"amap is a {type(amap).__name__}, not a tensor"
        got = amap.detach().double().cpu()
        assert tuple(got.shape) == (24, 40), f"amap has shape {tuple(got.shape)}"
        torch.testing.assert_close(got, (s_h * s_w)[0, 0], rtol=1e-5, atol=1e-6)
    run("amap", "s^h s^w of hand_built(0.1, 100.0) on the two squares", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # The split in the order [W, H]: it runs on any map, but the row gate reads column summaries.
    # The formula and direction checks see it (the means and the rank-one map still hold), and so
    # do the official-forward comparison of the layout check and the reference. The exercises are
    # graded apart from the module, except two results computed with it: `agrees` compares the
    # chunk port with the broken module (on 8 x 7 the port is right and the module is not), and
    # `amap` uses the module's gates on a 24 x 40 map.
    "split-w-h": ("f_h, f_w = torch.split(f, [h, w], dim=2)",
                  "f_w, f_h = torch.split(f, [w, h], dim=2)",
                  {"coord_attention_module.check_coord_attention_matches_formula",
                   "coord_attention_module.check_gates_separate_directions",
                   "coord_attention_module.check_width_and_official_code",
                   "coord_attention_module.reference", "chunk.agrees", "rectangle.amap"}),
    # Max instead of mean in the row strip: the strip check and the formula see it; adding a
    # pattern whose rows average to zero moves the row maxima, so the direction check sees it too.
    # CoordAttentionSeparate inherits the broken embed, so the strip check now rejects it as well
    # (`rejected_by` changes); the bright rows of `two` have a maximum of 1, not a mean of 0.2.
    "max-row-strip": ("z_h = x.mean(3, keepdim=True)", "z_h = x.amax(3, keepdim=True)",
                      {"coord_attention_module.check_coord_attention_matches_formula",
                       "coord_attention_module.check_strips_are_directional_means",
                       "coord_attention_module.check_gates_separate_directions",
                       "coord_attention_module.check_width_and_official_code",
                       "coord_attention_module.reference", "separate.rejected_by",
                       "rectangle.amap"}),
    # The column gate without its sigmoid: the map leaves (0, 1) (the rank-one check), the formula
    # and the official forward differ; `amap` uses the module's column gate.
    "no-column-sigmoid": ("s_w = torch.sigmoid(self.conv_w(self.to_row(f_w)))",
                          "s_w = self.conv_w(self.to_row(f_w))",
                          {"coord_attention_module.check_coord_attention_matches_formula",
                           "coord_attention_module.check_attention_is_rank_one",
                           "coord_attention_module.check_width_and_official_code",
                           "coord_attention_module.reference", "rectangle.amap"}),
}
