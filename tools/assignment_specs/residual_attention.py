"""The Residual Attention chapter's assignment: its questions, its grading helpers and its broken
submissions.

Read by tools/assignments.py (see its docstring for the format)."""

CHECK_NAMES = ("check_residual_attention_matches_formula",
               "check_fusion_is_one_plus_mask_times_trunk", "check_mask_range")
MOD = "residual_attention_module."          # the module question's tests, in BROKEN

SPEC = {
    "module": "residual_attention",
    # the port's mask branch, written with the module's attribute names: the body of mask_logits
    "remove": ["def port_mask(m, x0, trunk):"],
    "questions": [
        {
            "name": "residual_attention_module",
            "label": None,
            "cell": "class ResidualAttention(nn.Module):",
            "stub": ["PreActBottleneck.forward", "ResidualAttention.mask_logits",
                     "ResidualAttention.normalise", "ResidualAttention.mask",
                     "ResidualAttention.forward"],
            "prompt": (
                "**Write the module (11 points).** In the cell below, write the bodies of "
                "`PreActBottleneck.forward` (the unit of its docstring), "
                "`ResidualAttention.mask_logits` (the bottom-up and top-down halves and the two "
                "$1 \\times 1$ convolutions of `head`), `ResidualAttention.normalise` ($f_1$, "
                "$f_2$, $f_3$), `ResidualAttention.mask` and `ResidualAttention.forward` ($p$ "
                "units, $(1 + M) \\cdot T$, $p$ units), as their docstrings and the equations "
                "above say, in both variants. The constructors are given: keep the attribute "
                "names, the tests copy weights into them. Public test: the output shape (1 point). "
                "Hidden tests: the chapter's three derivation checks on `ResidualAttention(8)` in "
                "both variants (2 points each), the formula and range checks with the channel and "
                "spatial normalisations (2 points) and equality with the reference module at "
                "`depth=3` under copied weights (2 points)."),
            "args": "ResidualAttention",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'ResidualAttention(16) maps (2, 16, 7, 9) to "
                 "(2, 16, 7, 9)', lambda: G.assert_shape(ResidualAttention(16), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: ResidualAttention(8, variant=variant))")
                  for name in CHECK_NAMES],
                ("normalisations", 2, True, "G.run_check_attentions(ResidualAttention)"),
                ("reference", 2, True,
                 "G.compare_with_reference('ResidualAttention', ResidualAttention, "
                 "dict(channels=8, depth=3), (2, 13, 11))"),
            ],
        },
        {
            "name": "average_pool",
            "label": "residual_attention-ex-average-pool",
            "stub": ["AvgPoolRA", "rejected_by"],
            "args": "AvgPoolRA, rejected_by",
            "tests": [
                ("avg_pool_forward", 2, True, "G.compare_avg_pool(AvgPoolRA)"),
                ("rejected_by", 1, True, "G.check_rejected_by(rejected_by)"),
            ],
        },
        {
            "name": "one_plus",
            "label": "residual_attention-ex-one-plus",
            "stub": ["stacked"],
            "args": "stacked",
            "tests": [
                ("one_plus", 1, True, "G.check_stacked(stacked, one_plus=True)"),
                ("times_only", 1, True, "G.check_stacked(stacked, one_plus=False)"),
            ],
        },
        {
            "name": "caffe_sizes",
            "label": "residual_attention-ex-caffe-sizes",
            "stub": ["pooled_sides", "refused"],
            "args": "pooled_sides, refused",
            "tests": [
                ("paper_sides", 1, True, "G.check_pooled_sides(pooled_sides, 'paper')"),
                ("official_sides", 1, True, "G.check_pooled_sides(pooled_sides, 'official')"),
                ("refused", 1, True, "G.check_refused(refused)"),
            ],
        },
        {
            "name": "f3",
            "label": "residual_attention-ex-f3",
            "stub": ["f3"],
            "args": "f3",
            "tests": [("f3", 2, True, "G.check_f3(f3)")],
        },
        {
            "name": "check_max_pool",
            "label": "residual_attention-ex-check-max-pool",
            "stub": ["check_mask_sees_only_the_max_pool"],
            "args": "check_mask_sees_only_the_max_pool",
            "tests": [
                ("accepts_residual_attention", 1, True,
                 "G.expect_accepts(check_mask_sees_only_the_max_pool, 'ResidualAttention')"),
                ("rejects_average_pool", 1, True,
                 "G.expect_rejects(check_mask_sees_only_the_max_pool, 'average-pool')"),
                ("rejects_caffe_pool_in_paper", 1, True,
                 "G.expect_rejects(check_mask_sees_only_the_max_pool, 'caffe-pool-in-paper', "
                 "variants=('paper',))"),
                ("rejects_padded_pool_in_official", 1, True,
                 "G.expect_rejects(check_mask_sees_only_the_max_pool, 'padded-pool-in-official', "
                 "variants=('official',))"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...). The blocks are
# ResidualAttention(8, attention=..., variant=...), as tests/test_derivation_residual_attention.py
# builds them; its MUTANTS are (class, breakage or None, [(variant, attention), ...], checks).
HELPERS = '''
import math

from torch import nn

CHECK_NAMES = ''' + repr(CHECK_NAMES) + '''


def build(cls, variant, attention="mixed"):
    """A block of class `cls` as the chapter's derivation tests build it."""
    return cls(8, attention=attention, variant=variant)


def build_mutant(name, variant):
    """The broken block `name` of tests/test_derivation_residual_attention.py, in the
    normalisation its MUTANTS entry gives for `variant`."""
    cls, breakage, configs = mutants().MUTANTS[name][:3]
    attention = next(a for v, a in configs if v == variant)
    broken = build(cls, variant, attention)
    if breakage is not None:
        breakage(broken)
    return broken


MUTANT_TEXT = {
    "average-pool": "3x3 average pooling instead of max pooling in the mask branch",
    "caffe-pool-in-paper": "the paper variant with Caffe's unpadded pools instead of pools "
                           "padded by one",
    "padded-pool-in-official": "the official variant with pools padded by one instead of "
                               "Caffe's pools",
}


def mutant_doc(name):
    return MUTANT_TEXT.get(name, name)


def _gap(got, want, what):
    assert torch.is_tensor(got), f"{what}: got a {type(got).__name__}, not a tensor"
    assert tuple(got.shape) == tuple(want.shape), (
        f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    gap = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    scale = max(1.0, want.abs().max().item() if want.numel() else 1.0)
    assert gap <= 1e-10 * scale, f"{what}: max |difference| {gap:.3g}"


# One line per check (the docstring of check_mask_range has no ". " in its first sentence, which
# runs over three lines).
CHECK_MEANING = {
    "check_residual_attention_matches_formula": "output and mask equal the written-out formula in "
                                                "float64 with the same weights",
    "check_fusion_is_one_plus_mask_times_trunk": "attention residual learning, H = (1 + M) * T",
    "check_mask_range": "the mask has the input's shape and the range of its normalisation",
}


def run_check(check_name, build_student, variants=("paper", "official")):
    """One derivation check of the chapter on the student's module, in each variant."""
    check = getattr(checks(), check_name)
    for variant in variants:
        run(f"{check_name} (variant={variant!r})", CHECK_MEANING[check_name],
            lambda: check(build_student(variant)))


def run_check_attentions(student_cls):
    """The formula and range checks with the channel (f2) and spatial (f3) normalisations."""
    for name in ("check_residual_attention_matches_formula", "check_mask_range"):
        check, meaning = getattr(checks(), name), CHECK_MEANING[name]
        for attention in ("channel", "spatial"):
            run(f"{name} (attention={attention!r})", meaning,
                lambda: check(student_cls(8, attention=attention)))


def compare_avg_pool(student_cls):
    def compare():
        ref = reference()
        for variant in ref.ResidualAttention.VARIANTS:
            g = torch.Generator().manual_seed(5)
            block = ref.ResidualAttention(8, variant=variant).double().eval()
            _randomise(block, g)
            mine, want = copy.deepcopy(block), copy.deepcopy(block)
            mine.pool = student_cls(8, variant=variant).pool                  # your pool only
            want.pool = (nn.AvgPool2d(3, stride=2, ceil_mode=True) if variant == "official"
                         else nn.AvgPool2d(3, stride=2, padding=1))
            x = torch.randn(2, 8, 7, 9, generator=g, dtype=torch.float64)
            with torch.no_grad():
                _gap(mine(x), want(x), f"variant={variant!r}")
    run("AvgPoolRA", "the reference module with the pool of your AvgPoolRA equals it with the "
        "variant's 3x3 stride-2 average pool", compare)


def check_rejected_by(value):
    def compare():
        block = reference().ResidualAttention(8)
        block.pool = nn.AvgPool2d(3, stride=2, padding=1)
        want = set()
        for name in CHECK_NAMES:
            try:
                getattr(checks(), name)(block)
            except AssertionError:
                want.add(name)
        assert_equal(value, want)
    run("rejected_by", "the names of the checks that reject average pooling", compare)


def check_stacked(fn, one_plus):
    def compare():
        g = torch.Generator().manual_seed(6)
        x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
        for mask in (0.5, 0.2):
            for n in (0, 1, 3, 10):
                factor = (1 + mask) ** n if one_plus else mask ** n
                _gap(fn(x, n, mask=mask, one_plus=one_plus), x * factor, f"n={n}, mask={mask}")
    fusion, factor = ("(1 + M) h", "(1 + M)^n") if one_plus else ("M h", "M^n")
    with _reference_global(fn, "ResidualAttention", reference().ResidualAttention):
        run(f"stacked(..., one_plus={one_plus})",
            f"n fusions h <- {fusion} with an identity trunk multiply x by {factor}", compare)


def _measured_sides(pool, n, depth):
    """The sides of the bottom-up levels, pooling zeros with the reference module's own pool."""
    h, sides = torch.zeros(1, 1, n, n), [n]
    for _ in range(depth):
        try:
            h = pool(h)
            sides.append(h.shape[-1])
        except RuntimeError:                              # Caffe's pool on a side of 1: no output
            h = torch.zeros(1, 1, 0, 0)
            sides.append(0)
    return sides


def check_pooled_sides(fn, variant):
    def compare():
        pool = reference().ResidualAttention(1, variant=variant).pool
        for depth in (1, 2, 3):
            for n in range(1, 41):
                got = fn(n, depth, variant)
                want = _measured_sides(pool, n, depth)
                assert list(got) == want, (
                    f"pooled_sides({n}, {depth}, {variant!r}) = {got!r}, the pool gives {want}")
    rule = ("ceil((n - 3) / 2) + 1, 0 from a side of 1 (Caffe's pools)" if variant == "official"
            else "ceil(n / 2) (pools padded by one)")
    run(f"pooled_sides (variant={variant!r})", f"the sides of the bottom-up levels, {rule}",
        compare)


def check_refused(value):
    def compare():
        want = set()
        for side in (56, 14, 7):
            try:
                block = reference().ResidualAttention(8, depth=3, variant="official").eval()
                with torch.no_grad():
                    block(torch.randn(1, 8, side, side))
            except ValueError:
                want.add(side)
        assert_equal(value, want)
    run("refused", "the sides among 56, 14, 7 that the official module with depth=3 refuses",
        compare)


def check_f3(fn):
    def compare():
        g = torch.Generator().manual_seed(7)
        formula = checks().normalisation_formula
        for shape in ((2, 5, 7, 9), (3, 4, 6, 1)):
            e = 3 * torch.randn(*shape, generator=g, dtype=torch.float64) + 1
            _gap(fn(e), formula(e, "spatial"), f"e of shape {shape}, eps=1e-5")
            _gap(fn(e, eps=0.5), formula(e, "spatial", 0.5), f"e of shape {shape}, eps=0.5")
    run("f3", "each channel standardised over h w (mean, sqrt(mean square + eps)), then a sigmoid",
        compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # M * T without the identity path: the formula and fusion checks fail in every normalisation;
    # the range check only looks at M. AvgPoolRA inherits the fusion, so the fusion check rejects it
    # too and the notebook's rejected_by gains a name.
    "mask-times-trunk": ("return self.post(torch.addcmul(trunk, m, trunk))",
                         "return self.post(m * trunk)",
                         {MOD + "check_residual_attention_matches_formula",
                          MOD + "check_fusion_is_one_plus_mask_times_trunk",
                          MOD + "normalisations", MOD + "reference", "average_pool.rejected_by"}),
    # twice the size, then cropped, instead of the skip's size: a wrong grid on odd sides (paper),
    # a map smaller than the skip after Caffe's pools (official, 7 x 9: 1 x 2 doubled is 2 x 4, the
    # skip 3 x 4), so the range check fails in the official variant. The fusion check replaces the
    # mask; AvgPoolRA(8) is paper-variant, where the range check still accepts it. The notebook's
    # `refused` cell crashes (RuntimeError) at side 14 (1 doubled is 2, the skip 3) before it
    # reaches 7, so `refused` stays empty.
    "double-and-crop": ("up = F.interpolate(h, size=size, mode=\"bilinear\", "
                        "align_corners=True)",
                        "up = F.interpolate(h, scale_factor=2, mode=\"bilinear\", "
                        "align_corners=True)[..., : d.shape[2], : d.shape[3]]",
                        {MOD + "check_residual_attention_matches_formula", MOD + "check_mask_range",
                         MOD + "normalisations", MOD + "reference", "caffe_sizes.refused"}),
    # the first upload's TanH: the mixed mask leaves (0, 1), so the range check fails and rejects
    # AvgPoolRA too; the channel and spatial normalisations do not use f1.
    "tanh-mask": ("return torch.sigmoid(e)  ", "return torch.tanh(e)  ",
                  {MOD + "check_residual_attention_matches_formula", MOD + "check_mask_range",
                   MOD + "reference", "average_pool.rejected_by"}),
}
