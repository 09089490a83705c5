"""The BAM chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

CHECKS = ("check_bam_matches_formula", "check_bam_is_a_residual_gain", "check_bam_branch_shapes",
          "check_bam_combination")

SPEC = {
    "module": "bam",
    # the chapter shows no implementation outside the module cell: its equation cells compute the
    # formulas with einsum, and the transcriptions (bam_formula, OriginalBAM) are the checks
    "remove": [],
    "questions": [
        {
            "name": "bam_module",
            "label": None,
            "cell": "class BAM(nn.Module):",
            "stub": ["BAM.squeeze", "BAM.channel_logits", "BAM.spatial_logits", "BAM.combine",
                     "BAM.attention", "BAM.forward"],
            "prompt": (
                "**Write the module (11 points).** In the cell below, write the bodies of "
                "`BAM.squeeze`, `BAM.channel_logits`, `BAM.spatial_logits`, `BAM.combine`, "
                "`BAM.attention` and `BAM.forward`, as their docstrings and equations (1)-(4) say, "
                "in both variants (`self.official`: the product of the two maps instead of their "
                "sum). The constructor and `reset_official_parameters` are given: keep the "
                "attribute names, the tests copy weights into them. Public test: the output shape "
                "(1 point). Hidden tests: the chapter's four derivation checks on "
                "`BAM(12, reduction=3)` in both variants (2 points each) and equality with the "
                "reference module under copied weights (2 points)."),
            "args": "BAM",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'BAM(16, reduction=4) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(BAM(16, reduction=4), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: BAM(12, reduction=3, variant=variant))")
                  for name in CHECKS],
                ("reference", 2, True,
                 "G.compare_with_reference('BAM', BAM, dict(channels=12, reduction=3), (2, 5, 7))"),
            ],
        },
        {
            "name": "max_combination",
            "label": "bam-ex-max",
            "stub": ["BAMMax", "max_rejected_by"],
            "args": "BAMMax, max_rejected_by",
            "tests": [
                ("bam_max_combine", 2, True, "G.compare_bam_max(BAMMax)"),
                ("rejected_by", 1, True,
                 "G.run('max_rejected_by', 'the checks that reject BAMMax(16, reduction=4)', "
                 "lambda: G.assert_equal(max_rejected_by, G.rejecting(G.max_block())))"),
            ],
        },
        {
            "name": "reach",
            "label": "bam-ex-reach",
            "stub": ["reach_by_d"],
            "args": "reach_by_d",
            "tests": [
                ("window", 1, True,
                 "G.run('reach_by_d windows', 'two 3 x 3 convolutions with dilation d reach +-2d: "
                 "a 4d + 1 window', lambda: G.assert_equal({d: reach_by_d[d][0] for d in (1, 2, 4)}, "
                 "{d: 4 * d + 1 for d in (1, 2, 4)}))"),
                ("positions", 1, True,
                 "G.run('reach_by_d positions', 'offsets a d with a in -2..2 on each axis: 5 x 5 "
                 "taps for every d', lambda: G.assert_equal({d: reach_by_d[d][1] for d in (1, 2, 4)}, "
                 "{d: (2 * 2 + 1) ** 2 for d in (1, 2, 4)}))"),
            ],
        },
        {
            "name": "load_original",
            "label": "bam-ex-load",
            "stub": ["load_original"],
            "args": "load_original",
            "tests": [("load_original", 2, True, "G.check_load_original(load_original)")],
        },
        {
            "name": "check_taps",
            "label": "bam-ex-check-taps",
            "stub": ["check_bam_spatial_taps"],
            "args": "check_bam_spatial_taps",
            "tests": [
                ("accepts_bam", 1, True, "G.expect_accepts(check_bam_spatial_taps, 'BAM')"),
                ("rejects_no_dilation", 1, True,
                 "G.expect_rejects(check_bam_spatial_taps, 'no-dilation')"),
                ("rejects_padding_1", 1, True,
                 "G.expect_rejects(check_bam_spatial_taps, 'padding-1')"),
                ("rejects_padding_d_minus_1", 1, True,
                 "G.expect_rejects(check_bam_spatial_taps, 'padding-d-minus-1')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...). The default build,
# BAM(12, reduction=3, variant=...), fits BAM; build_mutant is redefined because the breakage of
# a MUTANTS entry of tests/test_derivation_bam.py may be None (the class alone is broken).
HELPERS = '''
CHECKS = ''' + repr(CHECKS) + '''
# the broken blocks whose breakage is a function without a docstring
_MUTANT_DOCS = {
    "max-pooling": "the channel branch pools with the maximum, not the mean",
    "relu-after-f2-forgotten": "no ReLU after f_2",
}

import re


def build_mutant(name, variant):
    cls, breakage = mutants().MUTANTS[name][:2]
    broken = build(cls, variant)
    if breakage is not None:
        breakage(broken)
    return broken


def mutant_doc(name):
    if name in _MUTANT_DOCS:
        return _MUTANT_DOCS[name]
    cls, breakage = mutants().MUTANTS[name][:2]
    doc = getattr(breakage, "__doc__", None) or cls.__doc__ or name
    return doc.strip().splitlines()[0]


def rejecting(block):
    """The names of the chapter's checks that reject `block`."""
    out = set()
    for name in CHECKS:
        try:
            getattr(checks(), name)(block)
        except AssertionError:
            out.add(name)
    return out


def max_block():
    """BAMMax(16, reduction=4) built here on the reference BAM."""
    combine = lambda self, m_c, m_s: torch.maximum(m_c, m_s)       # noqa: E731
    return type("Max", (reference().BAM,), {"combine": combine})(16, reduction=4)


def compare_bam_max(student_cls):
    def compare():
        ref = reference()
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(5)
            block = ref.BAM(12, reduction=3, variant=variant).double().eval()
            _randomise(block, g)
            mine = rebased(student_cls, ref.BAM, ["combine"])(12, reduction=3, variant=variant)
            mine = mine.double().eval()                                    # your combine only
            mine.load_state_dict(block.state_dict())
            x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
            with torch.no_grad():
                m = torch.sigmoid(torch.maximum(block.channel_logits(x), block.spatial_logits(x)))
                torch.testing.assert_close(mine(x), x + x * m, rtol=1e-10, atol=1e-12)
    run("BAMMax", "F + F sigma(max(M_c, M_s)) under copied weights", compare)


def check_load_original(fn):
    def compare():
        ref, chk = reference(), checks()
        original = chk.randomized(chk.OriginalBAM(32), seed=7).float()
        g = torch.Generator().manual_seed(7)
        with _reference_global(fn, "BAM", ref.BAM), \\
                _reference_global(fn, "convert_official_state_dict", ref.convert_official_state_dict):
            block = fn(copy.deepcopy(original), 32)                  # graded apart from your BAM
        assert getattr(block, "variant", None) == "official", "the result is not an official-variant BAM"
        assert not block.training, "the result is not in evaluation mode"
        x = torch.randn(2, 32, 6, 6, generator=g) + 1
        with torch.no_grad():
            torch.testing.assert_close(block(x), original(x), rtol=1e-5, atol=1e-6)
    run("load_original", "BAM(32, variant='official') equals OriginalBAM(32) on a 6 x 6 map", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by `new`
# in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # the residual forgotten, F' = M(F) F: the formula and residual-gain checks and the reference;
    # BAMMax subclasses your BAM, so the residual-gain check rejects it too and the
    # max_rejected_by that the solution computes gains that check
    "no-residual": ("return (1 + self.attention(f)) * f", "return self.attention(f) * f",
                    {"bam_module.check_bam_matches_formula", "bam_module.check_bam_is_a_residual_gain",
                     "bam_module.reference", "max_combination.rejected_by"}),
    # a max pool in the channel branch: only the formula check and the reference see it (the
    # other checks ask for shapes, a gain in (1, 2) and a sum or product, which it keeps)
    "max-squeeze": ("        return f.mean((2, 3))", "        return f.amax((2, 3))",
                    {"bam_module.check_bam_matches_formula", "bam_module.reference"}),
    # the official variant adds the maps as the paper does (the paper variant is right): the
    # formula and combination checks and the reference; BAMMax has its own combine, so its answers
    # are unchanged
    "official-adds": ("            return m_c * m_s", "            return m_c + m_s",
                      {"bam_module.check_bam_matches_formula", "bam_module.check_bam_combination",
                       "bam_module.reference"}),
}
