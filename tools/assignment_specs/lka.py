"""The LKA chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

LKA_CHECKS = ("check_lka_matches_formula", "check_lka_keeps_size", "check_lka_receptive_field",
              "check_lka_gradient_support", "check_lka_is_a_raw_product")
# check_lka_receptive_field sees only conv0 and conv_spatial, which the given constructor builds: on
# the student's module it cannot fail, so the module question does not grade it
MODULE_CHECKS = tuple(name for name in LKA_CHECKS if name != "check_lka_receptive_field")
VAN_CHECKS = ("check_van_attention_matches_formula", "check_van_attention_shortcut")

SPEC = {
    "module": "lka",
    # the transcription of the official Attention.forward (LKA inside) is VANAttention.forward
    "remove": ["def official_attention_forward("],
    "questions": [
        {
            "name": "lka_module",
            "label": None,
            "cell": "class LKA(nn.Module):",
            "stub": ["LKA.attention", "LKA.forward", "VANAttention.forward"],
            "prompt": (
                "**Write the module (17 points).** In the cell below, write the bodies of "
                "`LKA.attention` (Attention = Conv1x1(DW-D-Conv(DW-Conv(F))), no sigmoid), "
                "`LKA.forward` (Attention times F, after the input check) and "
                "`VANAttention.forward` (proj_2(LKA(GELU(proj_1(X)))), plus X in the official "
                "variant only), as their docstrings and the equations above say. The constructors "
                "are given: keep the attribute names, the tests copy weights into them. Public "
                "test: the output shapes (1 point). Hidden tests: on `LKA(6)` the chapter's checks "
                "of the formula, the size, the gradient support and the raw product (the "
                "receptive-field check sees only the given constructor), on `VANAttention(6)` its "
                "two block checks, each in both variants (2 points each), and equality of `LKA` "
                "and of `VANAttention` with the reference modules under copied weights "
                "(2 points each)."),
            "args": "LKA, VANAttention",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'LKA(8) and VANAttention(8) map (2, 8, 7, 9) to (2, 8, 7, 9)', "
                 "lambda: (G.assert_shape(LKA(8), (2, 8, 7, 9)), "
                 "G.assert_shape(VANAttention(8), (2, 8, 7, 9))))"),
                *[(name, 2, True, f"G.run_check({name!r}, lambda variant: LKA(6, variant=variant))")
                  for name in MODULE_CHECKS],
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: VANAttention(6, variant=variant))")
                  for name in VAN_CHECKS],
                ("reference_lka", 2, True,
                 "G.compare_with_reference('LKA', LKA, dict(channels=6), (2, 9, 11))"),
                ("reference_van", 2, True,
                 "G.compare_with_reference('VANAttention', VANAttention, dict(channels=6), "
                 "(2, 9, 11))"),
            ],
        },
        {
            "name": "tight",
            "label": "lka-ex-tight",
            "stub": ["TightLKA", "tight_rejected_by", "saved_params"],
            "args": "TightLKA, tight_rejected_by, saved_params",
            "tests": [
                ("tight_lka", 2, True, "G.check_tight(TightLKA)"),
                ("rejected_by", 1, True,
                 "G.run('tight_rejected_by', 'the checks that reject a d x d local kernel', "
                 "lambda: G.assert_equal(tight_rejected_by, G.rejecting(G.tight_block())))"),
                ("saved_params", 1, True,
                 "G.run('saved_params', 'TightLKA(64) saves C ((2d-1)^2 - d^2) = 64 (25 - 9) weights', "
                 "lambda: G.assert_equal(saved_params, 64 * ((2 * 3 - 1) ** 2 - 3 ** 2)))"),
            ],
        },
        {
            "name": "dilation",
            "label": "lka-ex-dilation",
            "stub": ["taps_by_d", "cheapest_d"],
            "args": "taps_by_d, cheapest_d",
            "tests": [
                ("taps_by_d", 1, True,
                 "G.run('taps_by_d', '(2d-1)^2 + ceil(21/d)^2 depth-wise weights per channel, d = 1..7', "
                 "lambda: G.assert_equal(taps_by_d, G.taps_by_d()))"),
                ("cheapest_d", 1, True,
                 "G.run('cheapest_d', 'the d in 1..7 with the fewest depth-wise weights', "
                 "lambda: G.assert_equal(cheapest_d, min(G.taps_by_d(), key=G.taps_by_d().get)))"),
            ],
        },
        {
            "name": "add",
            "label": "lka-ex-add",
            "stub": ["LKAAdd", "add_rejected_by"],
            "args": "LKAAdd, add_rejected_by",
            "tests": [
                ("lka_add_forward", 2, True, "G.compare_lka_add(LKAAdd)"),
                ("rejected_by", 1, True,
                 "G.run('add_rejected_by', 'the checks that reject Attention + F', "
                 "lambda: G.assert_equal(add_rejected_by, G.rejecting(G.add_block())))"),
            ],
        },
        {
            "name": "check_centred",
            "label": "lka-ex-check-centred",
            "stub": ["check_lka_window_is_centred"],
            "args": "check_lka_window_is_centred",
            "tests": [
                ("accepts_lka", 1, True, "G.expect_accepts(check_lka_window_is_centred, 'LKA')"),
                ("rejects_shifted_window", 1, True,
                 "G.expect_rejects(check_lka_window_is_centred, 'shifted-window')"),
                ("rejects_padding_6", 1, True,
                 "G.expect_rejects(check_lka_window_is_centred, 'padding-6-not-9')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...). The derivation
# tests keep two dicts, LKA_MUTANTS[name] = (cls, breakage, checks) and
# VAN_MUTANTS[name] = (cls, breakage, variants, checks), and build blocks as cls(6, variant=...).
HELPERS = '''
import math

import torch.nn.functional as nnf

LKA_CHECKS = ''' + repr(LKA_CHECKS) + '''
# the broken blocks whose breakage is a function without a docstring
_MUTANT_DOCS = {
    "dilation-1": "DW-D-Conv with dilation 1 (an 11 x 11 footprint)",
    "padding-6-not-9": "DW-D-Conv padded 6, not 9: the map shrinks and the window is off-centre",
    "shifted-window": "DW-D-Conv padded (6, 12) on the columns: the same size, a window 3 columns off",
    "relu-not-gelu": "ReLU instead of GELU in the block",
    "sigmoid-in-lka": "a sigmoid on the attention of the LKA inside the block",
}

import re


def build(cls, variant):
    """A block as tests/test_derivation_lka.py builds it."""
    return cls(6, variant=variant)


def _mutant_entry(name):
    m = mutants()
    return m.LKA_MUTANTS[name] if name in m.LKA_MUTANTS else m.VAN_MUTANTS[name]


def build_mutant(name, variant):
    cls, breakage = _mutant_entry(name)[:2]
    broken = build(cls, variant)
    if breakage is not None:
        breakage(broken)
    return broken


def mutant_doc(name):
    if name in _MUTANT_DOCS:
        return _MUTANT_DOCS[name]
    doc = _mutant_entry(name)[0].__doc__ or name
    return doc.strip().splitlines()[0]


def rejecting(block):
    """The names of the chapter's LKA checks that reject `block`."""
    out = set()
    for name in LKA_CHECKS:
        try:
            getattr(checks(), name)(block)
        except AssertionError:
            out.add(name)
    return out


def tight_block():
    """The reference LKA with a 3 x 3 depth-wise conv0 (padding 1), built here."""
    block = reference().LKA(6)
    block.conv0 = torch.nn.Conv2d(6, 6, 3, padding=1, groups=6)
    return block


def add_block():
    """The reference LKA with Output = Attention + F, built here."""
    return type("Add", (reference().LKA,), {"forward": lambda self, f: self.attention(f) + f})(6)


def taps_by_d():
    return {d: (2 * d - 1) ** 2 + math.ceil(21 / d) ** 2 for d in range(1, 8)}


def check_tight(student_cls):
    def compare():
        g = torch.Generator().manual_seed(5)
        for K, d in ((21, 3), (15, 5)):
            block = student_cls(5, kernel_size=K, dilation=d).double()
            _randomise(block, g)
            conv0 = block.conv0
            assert tuple(conv0.weight.shape) == (5, 1, d, d), (
                f"conv0 weight {tuple(conv0.weight.shape)} for d = {d}, expected {(5, 1, d, d)}")
            x = torch.randn(2, 5, 11, 13, generator=g, dtype=torch.float64)
            with torch.no_grad():
                want = nnf.conv2d(x, conv0.weight, conv0.bias, padding=(d - 1) // 2, groups=5)
                torch.testing.assert_close(conv0(x), want, rtol=1e-10, atol=1e-12)
            width = d * math.ceil(K / d)
            support = checks().impulse_response(block, size=41)[0].abs() > 1e-12
            got = (int(support.any(1).sum()), int(support.any(0).sum()))
            assert got == (width, width), f"footprint {got} for K = {K}, d = {d}, not {width} x {width}"
    run("TightLKA", "conv0 is a d x d depth-wise conv padded (d - 1) / 2: a d ceil(K/d) footprint",
        compare)


def compare_lka_add(student_cls):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(6)
        block = ref.LKA(6).double().eval()
        _randomise(block, g)
        mine = rebased(student_cls, ref.LKA, ["forward"])(6).double().eval()   # your forward only
        mine.load_state_dict(block.state_dict())
        x = torch.randn(2, 6, 9, 11, generator=g, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(mine(x), block.attention(x) + x, rtol=1e-10, atol=1e-12)
    run("LKAAdd", "Attention + F with the attention of LKA, under copied weights", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by `new`
# in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # a sigmoid on the attention: the formula and product checks reject LKA, the block's formula
    # check rejects VANAttention (whose LKA is yours); the shortcut check zeroes proj_2, so it cannot
    # see it. TightLKA subclasses your LKA, so its gate is squashed too and the product check now
    # rejects it: the tight_rejected_by that the solution computes gains that check.
    "sigmoid-added": ("return self.conv1(self.conv_spatial(self.conv0(f)))",
                      "return torch.sigmoid(self.conv1(self.conv_spatial(self.conv0(f))))",
                      {"lka_module.check_lka_matches_formula", "lka_module.check_lka_is_a_raw_product",
                       "lka_module.check_van_attention_matches_formula", "lka_module.reference_lka",
                       "lka_module.reference_van", "tight.rejected_by"}),
    # the official block without its shortcut: only the block's tests see it (the paper variant is
    # right, and LKA is untouched)
    "no-shortcut": ("            return y + x\n", "            return y\n",
                    {"lka_module.check_van_attention_matches_formula",
                     "lka_module.check_van_attention_shortcut", "lka_module.reference_van"}),
    # the paper's + ablation in LKA.forward: the formula and product checks, the block's formula
    # check and both references. LKAAdd has its own forward (graded on the reference LKA), but
    # TightLKA inherits yours, so the product check rejects it too and tight_rejected_by is off.
    "add-not-product": ("return self.attention(f) * f  # Attention (x) F",
                        "return self.attention(f) + f",
                        {"lka_module.check_lka_matches_formula", "lka_module.check_lka_is_a_raw_product",
                         "lka_module.check_van_attention_matches_formula", "lka_module.reference_lka",
                         "lka_module.reference_van", "tight.rejected_by"}),
}
