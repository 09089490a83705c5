"""The strip pooling chapter's assignment: its questions, its grading helpers and its broken
submissions.

Read by tools/assignments.py (see its docstring for the format)."""

SPM_CHECKS = ("check_strip_pooling_matches_formula", "check_strips_are_row_and_column_means",
              "check_bar_lights_its_row")

SPEC = {
    "module": "strip_pooling",
    # the official SPBlock.forward written out with F ops (the official variant's answer)
    "remove": ["def spblock_official("],
    "questions": [
        {
            "name": "strip_pooling_module",
            "label": None,
            "cell": "class StripPooling(nn.Module):",
            "stub": ["StripPooling.pool_h", "StripPooling.pool_v", "StripPooling.strips",
                     "StripPooling.gate", "StripPooling.forward"],
            "prompt": (
                "**Write the module (9 points).** In the cell below, write the bodies of "
                "`StripPooling.pool_h`, `StripPooling.pool_v`, `StripPooling.strips`, "
                "`StripPooling.gate` and `StripPooling.forward`, as their docstrings and the "
                "equations above say, in both variants (`forward(x)` returns "
                "$z = x \\cdot \\sigma(f(y))$; the input checks of the original are optional). "
                "`MixedPooling` and the other classes of the cell are given. The constructor is "
                "given: keep the attribute names, the tests copy weights into them. Public test: "
                "the output shape (1 point). Hidden tests: the chapter's three derivation checks "
                "of the SPM on `StripPooling(12)` in both variants (2 points each) and equality "
                "with the reference module under copied weights (2 points)."),
            "args": "StripPooling",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'StripPooling(16) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(StripPooling(16), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: StripPooling(12, variant=variant))")
                  for name in SPM_CHECKS],
                ("reference", 2, True,
                 "G.compare_with_reference('StripPooling', StripPooling, dict(channels=12), "
                 "(2, 5, 7))"),
            ],
        },
        {
            "name": "cheap_spm",
            "label": "strip_pooling-ex-cheap-spm",
            "stub": ["cheap_spm"],
            "args": "cheap_spm",
            "tests": [
                ("equals_module", 2, True, "G.check_cheap_spm_equals(cheap_spm)"),
                ("strips_only", 1, True, "G.check_cheap_spm_cost(cheap_spm)"),
            ],
        },
        {
            "name": "bins",
            "label": "strip_pooling-ex-bins",
            "stub": ["bin_rows", "two_row_bins"],
            "args": "bin_rows, two_row_bins",
            "tests": [
                ("bin_rows", 2, True, "G.check_bin_rows(bin_rows)"),
                ("two_row_bins", 1, True, "G.check_two_row_bins(two_row_bins)"),
            ],
        },
        {
            "name": "first_upload",
            "label": "strip_pooling-ex-first-upload",
            "stub": ["FirstUploadSPM", "tap_used"],
            "args": "FirstUploadSPM, tap_used",
            "tests": [
                ("first_upload_forward", 2, True, "G.compare_first_upload(FirstUploadSPM)"),
                ("tap_used", 1, True, "G.check_tap_used(tap_used)"),
            ],
        },
        {
            "name": "check_column",
            "label": "strip_pooling-ex-check-column",
            "stub": ["check_bar_lights_its_column"],
            "args": "check_bar_lights_its_column",
            "tests": [
                ("accepts_strip_pooling", 1, True,
                 "G.expect_accepts(check_bar_lights_its_column, 'StripPooling')"),
                ("rejects_no_sigmoid", 1, True,
                 "G.expect_rejects(check_bar_lights_its_column, 'no-sigmoid')"),
                ("rejects_sum_not_mean", 1, True,
                 "G.expect_rejects(check_bar_lights_its_column, 'sum-not-mean')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...).
HELPERS = '''
import torch.nn.functional as F


def build(cls, variant):
    """A block of class `cls` as the chapter's derivation tests build it."""
    return cls(12, variant=variant)


def build_mutant(name, variant):
    """The broken SPM `name` of tests/test_derivation_strip_pooling.py (SPM_MUTANTS[name] =
    (cls, breakage, checks))."""
    cls, breakage = mutants().SPM_MUTANTS[name][:2]
    broken = build(cls, variant)
    breakage(broken)
    return broken


_MUTANT_DOCS = {"no-sigmoid": "no sigmoid: the gate is f(y) itself, not sigma(f(y))",
                "sum-not-mean": "y^h is the sum of each row, not its mean (no 1/W)"}


def mutant_doc(name):
    if name in _MUTANT_DOCS:
        return _MUTANT_DOCS[name]
    doc = getattr(mutants().SPM_MUTANTS[name][0], "__doc__", None) or name
    return doc.strip().splitlines()[0]


def _paper_spm(seed):
    """A float64, eval-mode paper SPM of the reference with random weights."""
    block = reference().StripPooling(12).double().eval()
    _randomise(block, torch.Generator().manual_seed(seed))
    return block


def check_cheap_spm_equals(fn):
    def compare():
        block = _paper_spm(5)
        g = torch.Generator().manual_seed(6)
        for H, W in ((7, 9), (5, 5), (1, 6)):
            x = torch.randn(2, 12, H, W, generator=g, dtype=torch.float64)
            with torch.no_grad():
                torch.testing.assert_close(fn(block, x), block(x), rtol=1e-10, atol=1e-12)
    run("cheap_spm", "the output of the paper SPM under random weights", compare)


def check_cheap_spm_cost(fn):
    def cost():
        from torch.utils.flop_counter import FlopCounterMode

        block = _paper_spm(7)
        B, C, H, W = 1, 12, 40, 40
        x = torch.randn(B, C, H, W, dtype=torch.float64)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(block, x)
        full = 2 * C * C * H * W                        # f alone on the expanded H x W map
        flops = counter.get_total_flops()
        assert flops < full, f"{flops} FLOPs, f on the full 40 x 40 map alone costs {full}"
    run("cheap_spm (cost)", "f applied to the strips, not to the expanded H x W map", cost)


def pooled_rows(N, n):
    """The rows that each of n bins of F.adaptive_avg_pool1d over N rows averages, read off the
    pooling of the N one-hot rows."""
    weights = F.adaptive_avg_pool1d(torch.eye(N, dtype=torch.float64)[None], n)[0]      # (N, n)
    return [[m for m in range(N) if weights[m, k] > 0] for k in range(n)]


def check_bin_rows(fn):
    def compare():
        for N, n in ((7, 20), (7, 12), (9, 20), (6, 4), (10, 3), (5, 5), (1, 4), (4, 1)):
            got = [[int(m) for m in rows] for rows in fn(N, n)]
            assert got == pooled_rows(N, n), f"bin_rows({N}, {n}) = {got}"
    run("bin_rows", "the rows that adaptive_avg_pool1d averages in each bin", compare)


def check_two_row_bins(two_row_bins):
    want = {n: sum(len(rows) == 2 for rows in pooled_rows(7, n)) for n in (20, 12)}
    run("two_row_bins", "the bins of 7 rows that average two rows, for 20 and 12 bins",
        lambda: assert_equal(two_row_bins, want))


def _first_upload_formula(block, x, conv_h_weight=None):
    """SPBlock before 218a797, written out: conv_h (3x1) + bn_h on the 1 x W strip, conv_v (1x3)
    + bn_v on the H x 1 strip, fused by a sum (a ReLU in the official variant), f, sigmoid."""
    w_h = block.conv_h.weight if conv_h_weight is None else conv_h_weight
    y_v, y_h = x.mean(2, keepdim=True), x.mean(3, keepdim=True)     # (B, C, 1, W), (B, C, H, 1)
    from_columns = block.bn_h(F.conv2d(y_v, w_h, block.conv_h.bias, padding=(1, 0)))
    from_rows = block.bn_v(F.conv2d(y_h, block.conv_v.weight, block.conv_v.bias, padding=(0, 1)))
    y = from_rows + from_columns
    if block.variant == "official":
        y = torch.relu(y)
    return x * torch.sigmoid(F.conv2d(y, block.fuse.weight, block.fuse.bias))


def compare_first_upload(student_cls):
    def compare():
        ref = reference()
        mine_cls = rebased(student_cls, ref.StripPooling, ["strips"])          # your strips only
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(8)
            block = ref.StripPooling(12, variant=variant).double().eval()
            _randomise(block, g)
            mine = mine_cls(12, variant=variant).double().eval()
            mine.load_state_dict(block.state_dict())
            x = torch.randn(2, 12, 7, 9, generator=g, dtype=torch.float64)
            with torch.no_grad():
                torch.testing.assert_close(mine(x), _first_upload_formula(block, x),
                                           rtol=1e-10, atol=1e-12)
    run("FirstUploadSPM", "the 3x1 conv (with bn_h) on the 1 x W strip and the 1x3 conv (with bn_v) "
        "on the H x 1 strip, under copied weights", compare)


def check_tap_used(tap_used):
    def compare():
        block = reference().StripPooling(12, variant="official").double().train()
        _randomise(block, torch.Generator().manual_seed(9))
        w = block.conv_h.weight.detach().clone().requires_grad_(True)
        g = torch.Generator().manual_seed(10)
        x = torch.randn(2, 12, 7, 9, generator=g, dtype=torch.float64)
        _first_upload_formula(block, x, conv_h_weight=w).square().sum().backward()
        want = [bool(w.grad[:, :, t].abs().sum() > 0) for t in range(3)]
        assert isinstance(tap_used, (list, tuple)) and len(tap_used) == 3, f"got {tap_used!r}"
        assert_equal([bool(t) for t in tap_used], want)
    run("tap_used", "the taps of the 3x1 conv1 that reach the 1 x W strip's data", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by `new`
# in one code cell loses exactly the points of the tests in `caught` (question.test). Only the
# module question can lose points: the exercises are graded on the reference module (the student's
# FirstUploadSPM is rebased on it, cheap_spm and the column check get reference blocks).
BROKEN = {
    # half of the first upload's pairing: the 1x3 conv on the H x 1 strip, so only its middle tap
    # works. The formula check and the reference catch it; the strip check reads pool_h / pool_v
    # only, and the bar check sets identity 1-D convs, whose middle taps are all they use.
    "conv-on-wrong-strip": ("y_h = self.bn_h(self.conv_h(self.pool_h(x)))",
                            "y_h = self.bn_h(self.conv_v(self.pool_h(x)))",
                            {"strip_pooling_module.check_strip_pooling_matches_formula",
                             "strip_pooling_module.reference"}),
    # the paper's formula in both variants: the official variant loses SPBlock's ReLU on y. The
    # bar check's strips are non-negative, so the ReLU changes nothing there.
    "official-without-relu": ("y = self.act(y_h + y_v)", "y = y_h + y_v",
                              {"strip_pooling_module.check_strip_pooling_matches_formula",
                               "strip_pooling_module.reference"}),
    # no sigmoid: the formula check, the bar check (gate outside (0, 1)) and the reference catch it
    "no-sigmoid": ("return self.sigmoid(self.fuse(y))", "return self.fuse(y)",
                   {"strip_pooling_module.check_strip_pooling_matches_formula",
                    "strip_pooling_module.check_bar_lights_its_row",
                    "strip_pooling_module.reference"}),
}
