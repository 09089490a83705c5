"""The SE chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

SPEC = {
    "module": "se",
    "remove": ["gain = torch.sigmoid(torch.relu(squeezed"],
    "questions": [
        {
            "name": "se_module",
            "label": None,
            "cell": "class SE(nn.Module):",
            "stub": ["SE.squeeze", "SE.gate", "SE.forward"],
            "prompt": (
                "**Write the module (7 points).** In the cell below, write the bodies of "
                "`SE.squeeze`, `SE.gate` and `SE.forward`, as their docstrings and equations (2)-(4) "
                "say. The constructor is given: keep the attribute names, the tests copy weights "
                "into them. Public test: the output shape (1 point). Hidden tests: the chapter's "
                "two derivation checks on `SE(12, reduction=3)` in both variants (2 points each) "
                "and equality with the reference module under copied weights (2 points)."),
            "args": "SE",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'SE(16, reduction=4) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(SE(16, reduction=4), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: SE(12, reduction=3, variant=variant))")
                  for name in ("check_se_matches_formula", "check_se_is_a_channel_gain")],
                ("reference", 2, True,
                 "G.compare_with_reference('SE', SE, dict(channels=12, reduction=3), (2, 5, 7))"),
            ],
        },
        {
            "name": "max_squeeze",
            "label": "se-ex-max-squeeze",
            "stub": ["SEMax", "rejected_by"],
            "args": "SEMax, rejected_by",
            "tests": [
                ("semax_forward", 2, True, "G.compare_se_max(SEMax)"),
                ("rejected_by", 1, True,
                 "G.run('rejected_by', 'the checks that reject a max squeeze', "
                 "lambda: G.assert_equal(rejected_by, {'check_se_matches_formula'}))"),
            ],
        },
        {
            "name": "reduction",
            "label": "se-ex-reduction",
            "stub": ["n_params_by_r"],
            "args": "n_params_by_r",
            "tests": [
                ("n_params_by_r", 1, True,
                 "G.run('n_params_by_r', 'SE(64) has 2 * 64 * (64 // r) weights', lambda: G.assert_equal("
                 "n_params_by_r, {r: 2 * 64 * (64 // r) for r in (4, 8, 16, 32)}))"),
            ],
        },
        {
            "name": "bias",
            "label": "se-ex-bias",
            "stub": ["drop_biases"],
            "args": "drop_biases",
            "tests": [("drop_biases", 2, True, "G.check_drop_biases(drop_biases)")],
        },
        {
            "name": "check_mean",
            "label": "se-ex-check-mean",
            "stub": ["check_se_squeeze_is_the_mean"],
            "args": "check_se_squeeze_is_the_mean",
            "tests": [
                ("accepts_se", 1, True, "G.expect_accepts(check_se_squeeze_is_the_mean, 'SE')"),
                ("rejects_max_squeeze", 1, True,
                 "G.expect_rejects(check_se_squeeze_is_the_mean, 'max-squeeze')"),
                ("rejects_wrong_axis", 1, True,
                 "G.expect_rejects(check_se_squeeze_is_the_mean, 'wrong-axis')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...).
HELPERS = '''
def compare_se_max(student_cls):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(5)
        block = ref.SE(12, reduction=3).double().eval()
        _randomise(block, g)
        assert "squeeze" in vars(student_cls), "SEMax does not define squeeze"
        rebased = type("SEMax", (ref.SE,), {"squeeze": student_cls.squeeze})           # your squeeze only
        mine = rebased(12, reduction=3).double().eval()
        mine.load_state_dict(block.state_dict())
        x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
        with torch.no_grad():
            s = block.excite(x.amax((2, 3)))[:, :, None, None]
            torch.testing.assert_close(mine(x), x * s, rtol=1e-10, atol=1e-12)
    run("SEMax", "SE with z = the maximum of each channel, under copied weights", compare)


def check_drop_biases(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(6)
        official = ref.SE(12, reduction=3, variant="official").double()
        _randomise(official, g)
        with _reference_global(fn, "SE", ref.SE):                 # graded apart from your SE
            paper = fn(official)
        assert getattr(paper, "variant", None) == "paper", "the result is not a paper-variant SE"
        assert paper.excite[0].bias is None and paper.excite[2].bias is None, "the result has biases"
        for i in (0, 2):
            torch.testing.assert_close(paper.excite[i].weight, official.excite[i].weight, rtol=0, atol=0)
    run("drop_biases", "a paper SE with the official block's W_1 and W_2", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by `new`
# in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    "no-sigmoid": ("s = self.excite(self.squeeze(u))", "s = self.excite[:3](self.squeeze(u))",
                   {"se_module.check_se_matches_formula", "se_module.check_se_is_a_channel_gain",
                    "se_module.reference", "max_squeeze.rejected_by"}),
    "max-squeeze": ("        return u.mean((2, 3))", "        return u.amax((2, 3))",
                    {"se_module.check_se_matches_formula", "se_module.reference"}),   # SEMax has its own squeeze
}
