"""The CSRA chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

CHECKS = ("check_csra_matches_formula", "check_csra_temperature_limits",
          "check_csra_is_class_specific")
# Four heads (temperatures 1, 2, 4 and max pooling), as tests/test_derivation_csra.py builds it.
BUILD = "CSRA(12, 5, num_heads=4, variant=variant)"

SPEC = {
    "module": "csra",
    # The inline broken head of "Derivation checks" is the module's forward with one bug: it
    # would show the answer. The step-by-step cells are the formulas to write the module from.
    "remove": ["class SoftmaxOverClasses(CSRAHead):"],
    "questions": [
        {
            "name": "csra_module",
            "label": None,
            "cell": "class CSRA(nn.Module):",
            "stub": ["CSRAHead.scores", "CSRAHead.forward", "CSRA.forward"],
            "prompt": (
                "**Write the module (9 points).** In the cell below, write the bodies of "
                "`CSRAHead.scores` (the class scores, divided by $\\lVert m_i \\rVert$ when "
                "`self.normalize`), `CSRAHead.forward` (eq. (7), max pooling when "
                "`self.max_pool`) and `CSRA.forward` (the input check, then eq. (6)), as their "
                "docstrings and the equations above say. The constructors are given: keep the "
                "attribute names, the tests copy weights into them. Public test: the output "
                "shape (1 point). Hidden tests: the chapter's three derivation checks on "
                "`CSRA(12, 5, num_heads=4)` in both variants (2 points each) and equality with "
                "the reference module under copied weights (2 points)."),
            "args": "CSRA",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'CSRA(16, 5) maps (2, 16, 7, 9) to (2, 5) logits', "
                 "lambda: G.assert_shape(CSRA(16, 5), (2, 16, 7, 9), (2, 5)))"),
                *[(name, 2, True, f"G.run_check({name!r}, lambda variant: {BUILD})")
                  for name in CHECKS],
                ("reference", 2, True,
                 "G.compare_with_reference('CSRA', CSRA, "
                 "dict(channels=12, num_classes=5, num_heads=4), (2, 5, 7))"),
            ],
        },
        {
            "name": "four_lines",
            "label": "csra-ex-four-lines",
            "stub": ["mean_plus_max", "same_as"],
            "args": "mean_plus_max, same_as",
            "tests": [
                ("mean_plus_max", 2, True, "G.check_mean_plus_max(mean_plus_max)"),
                ("same_as", 1, True, "G.check_same_as(same_as)"),
            ],
        },
        {
            "name": "lambda_zero",
            "label": "csra-ex-lambda-zero",
            "stub": ["as_linear"],
            "args": "as_linear",
            "tests": [("as_linear", 2, True, "G.check_as_linear(as_linear)")],
        },
        {
            "name": "cold",
            "label": "csra-ex-cold",
            "stub": ["cold_factor"],
            "args": "cold_factor",
            "tests": [
                ("cold_factor", 1, True,
                 "G.run('cold_factor', 'at T -> 0 the head is (1 + lambda) times the pooled "
                 "classifier', lambda: G.assert_close_number(cold_factor, 1.1, rel=1e-6))"),
            ],
        },
        {
            "name": "check_base",
            "label": "csra-ex-check-base",
            "stub": ["check_csra_base_is_the_mean"],
            "args": "check_csra_base_is_the_mean",
            "tests": [
                ("accepts_csra", 1, True, "G.expect_accepts(check_csra_base_is_the_mean, 'CSRA')"),
                ("rejects_max_mean_swapped", 1, True,
                 "G.expect_rejects(check_csra_base_is_the_mean, 'max-mean-swapped')"),
                ("rejects_lambda_on_base", 1, True,
                 "G.expect_rejects(check_csra_base_is_the_mean, 'lambda-on-base')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...).
HELPERS = '''
def build(cls, variant):
    """A head as tests/test_derivation_csra.py builds it: four heads, every kind of head."""
    return cls(12, 5, num_heads=4, variant=variant)


def _mean_plus_max_of(x, weight, lam):
    ell = torch.einsum("kd,bdn->bkn", weight, x.flatten(2))
    return ell.mean(-1) + lam * ell.amax(-1)


def check_mean_plus_max(fn):
    def compare():
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
        weight = torch.randn(5, 12, generator=g, dtype=torch.float64)
        for lam in (0.1, 0.7):
            got = fn(x, weight, lam)
            assert tuple(got.shape) == (2, 5), f"shape {tuple(got.shape)}, expected (2, 5)"
            torch.testing.assert_close(got, _mean_plus_max_of(x, weight, lam),
                                       rtol=1e-10, atol=1e-12)
    run("mean_plus_max", "mean_j l_i^j + lam max_j l_i^j of the unnormalised scores", compare)


def check_same_as(kwargs):
    def compare():
        assert isinstance(kwargs, dict), f"same_as is a {type(kwargs).__name__}, not a dict"
        ref = reference()
        g = torch.Generator().manual_seed(6)
        block = ref.CSRA(12, 5, **kwargs).double().eval()
        _randomise(block, g)
        assert len(block.multi_head) == 1, "the four lines are one head"
        x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
        weight = block.multi_head[0].head.weight.flatten(1)
        with torch.no_grad():
            torch.testing.assert_close(block(x), _mean_plus_max_of(x, weight, block.lam),
                                       rtol=1e-10, atol=1e-12)
    run("same_as", "CSRA(12, 5, **same_as) computes mean + lam max of m_i^T x_j", compare)


def check_as_linear(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(7)
        block = ref.CSRA(12, 5, lam=0).double().eval()
        _randomise(block, g)
        with _reference_global(fn, "CSRA", ref.CSRA):              # graded apart from your CSRA
            linear = fn(block)
        assert isinstance(linear, torch.nn.Linear), "as_linear does not return an nn.Linear"
        assert linear.bias is None, "the pooled classifier has no bias"
        x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(linear(x.mean((2, 3))), block(x), rtol=1e-10, atol=1e-12)
    run("as_linear", "a bias-free nn.Linear on GAP(x) that equals CSRA with lam = 0", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by `new`
# in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    "no-normalisation": (
        "            ell = ell / torch.linalg.vector_norm(m, dim=1)[:, None]",
        "            ell = ell",
        {"csra_module.check_csra_matches_formula", "csra_module.check_csra_temperature_limits",
         "csra_module.reference"}),
    "softmax-over-classes": (
        "weights = torch.softmax(shifted * self.temperature, dim=2)",
        "weights = torch.softmax(shifted * self.temperature, dim=1)",
        {"csra_module.check_csra_matches_formula", "csra_module.check_csra_temperature_limits",
         "csra_module.check_csra_is_class_specific", "csra_module.reference"}),
    "first-head-only": (
        "        return torch.stack(logits, 0).sum(0)",
        "        return logits[0]",
        {"csra_module.check_csra_matches_formula", "csra_module.check_csra_temperature_limits",
         "csra_module.reference"}),
}
