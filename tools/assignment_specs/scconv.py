"""The SCConv chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

SC_CHECKS = ("check_scconv_matches_formula", "check_scconv_context_reach")
# check_sc_bottleneck_adds_no_conv_weights counts the constructor's weights, which are given: it
# would pass on the unwritten module, so it is not a test here.
BLOCK_CHECKS = ("check_sc_bottleneck_matches_formula", "check_sc_bottleneck_matches_figure",
                "check_sc_bottleneck_context_reach")

SPEC = {
    "module": "scconv",
    # the official SCConv.forward and SCBottleneck.forward written out with F ops
    "remove": ["def scconv_official("],
    "questions": [
        {
            "name": "scconv_module",
            "label": None,
            "cell": "class SCConv(nn.Module):",
            "stub": ["SCConv.context", "SCConv.gate", "SCConv.forward", "SCBottleneck.forward"],
            "prompt": (
                "**Write the module (15 points).** In the cell below, write the bodies of "
                "`SCConv.context`, `SCConv.gate` and `SCConv.forward` (eqs. (1) to (4), with "
                "$\\mathrm{Up}$ bilinear in the paper variant and nearest in the official one) and "
                "`SCBottleneck.forward` (the block described above), in both variants; the input "
                "checks of the original are optional. `CalibrationPool` (eq. (1)) and the "
                "constructors are given: keep the attribute names, the tests copy weights into "
                "them. Public test: the output shape (1 point). Hidden tests: the chapter's two "
                "derivation checks of `SCConv(6)` and three of `SCBottleneck(16)` in both variants "
                "(2 points each) and equality with the reference modules under copied weights "
                "(2 points for `SCConv`, 2 for `SCBottleneck` with a stride and a shortcut)."),
            "args": "SCConv, SCBottleneck",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'SCConv(16) and SCBottleneck(16) map (2, 16, 7, 9) to "
                 "(2, 16, 7, 9)', lambda: (G.assert_shape(SCConv(16).eval(), (2, 16, 7, 9)), "
                 "G.assert_shape(SCBottleneck(16).eval(), (2, 16, 7, 9))))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: SCConv(6, variant=variant))")
                  for name in SC_CHECKS],
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: SCBottleneck(16, variant=variant))")
                  for name in BLOCK_CHECKS],
                ("scconv_reference", 2, True,
                 "G.compare_with_reference('SCConv', SCConv, dict(channels=6), (2, 7, 9))"),
                ("sc_bottleneck_reference", 2, True,
                 "G.compare_with_reference('SCBottleneck', SCBottleneck, "
                 "dict(channels=16, out_channels=24, stride=2), (2, 13, 10))"),
            ],
        },
        {
            "name": "split_conv",
            "label": "scconv-ex-split-conv",
            "stub": ["SplitBottleneck"],
            "args": "SplitBottleneck",
            "tests": [
                ("equals_block", 2, True, "G.check_split_equals(SplitBottleneck)"),
                ("one_conv", 1, True, "G.check_split_uses_one_conv(SplitBottleneck)"),
            ],
        },
        {
            "name": "no_identity",
            "label": "scconv-ex-no-identity",
            "stub": ["SCConvNoIdentity", "rejected_by", "n_distinct_gate_values"],
            "args": "SCConvNoIdentity, rejected_by, n_distinct_gate_values",
            "tests": [
                ("no_identity_forward", 2, True, "G.compare_no_identity(SCConvNoIdentity)"),
                ("rejected_by", 1, True, "G.check_rejected_by(rejected_by)"),
                ("n_distinct_gate_values", 1, True,
                 "G.run('n_distinct_gate_values', 'one gate value per 4 x 4 pooling window of a "
                 "16 x 16 map', lambda: G.assert_equal(n_distinct_gate_values, (16 // 4) ** 2))"),
            ],
        },
        {
            "name": "unused_rows",
            "label": "scconv-ex-unused-rows",
            "stub": ["unused_rows"],
            "args": "unused_rows",
            "tests": [("unused_rows", 2, True, "G.check_unused_rows(unused_rows)")],
        },
        {
            "name": "check_silu",
            "label": "scconv-ex-check-silu",
            "stub": ["check_scconv_is_silu_without_context"],
            "args": "check_scconv_is_silu_without_context",
            "tests": [
                ("accepts_scconv", 1, True,
                 "G.expect_accepts(check_scconv_is_silu_without_context, 'SCConv')"),
                ("rejects_gate_without_identity", 1, True,
                 "G.expect_rejects(check_scconv_is_silu_without_context, 'gate-without-identity')"),
                ("rejects_identity_after_sigmoid", 1, True,
                 "G.expect_rejects(check_scconv_is_silu_without_context, 'identity-after-sigmoid')"),
                ("rejects_no_gate", 1, True,
                 "G.expect_rejects(check_scconv_is_silu_without_context, 'no-gate')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...).
HELPERS = '''
def _is_block(cls):
    return any(c.__name__ == "SCBottleneck" for c in cls.__mro__)


def build(cls, variant):
    """A block of class `cls` as the chapter's derivation tests build it: SCConv(6),
    SCBottleneck(16)."""
    return cls(16 if _is_block(cls) else 6, variant=variant)


def build_mutant(name, variant):
    """The broken block `name` of tests/test_derivation_scconv.py (SC_MUTANTS or BLOCK_MUTANTS:
    name -> (cls, breakage or None, checks))."""
    table = {**mutants().SC_MUTANTS, **mutants().BLOCK_MUTANTS}
    cls, breakage = table[name][:2]
    broken = build(cls, variant)
    if breakage is not None:
        breakage(broken)
    return broken


def mutant_doc(name):
    table = {**mutants().SC_MUTANTS, **mutants().BLOCK_MUTANTS}
    doc = getattr(table[name][0], "__doc__", None) or name
    return doc.strip().splitlines()[0]


def _random_block(seed, variant="paper"):
    block = reference().SCBottleneck(16, variant=variant).double().eval()
    _randomise(block, torch.Generator().manual_seed(seed))
    return block


def check_split_equals(student_cls):
    def compare():
        for variant in ("paper", "official"):
            block = _random_block(5, variant)
            x = torch.randn(2, 16, 9, 7, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
            with torch.no_grad():
                want = block(x)
                got = student_cls(copy.deepcopy(block)).eval()(x)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    run("SplitBottleneck", "the output of the SCBottleneck it was built from (eval mode)", compare)


def check_split_uses_one_conv(student_cls):
    def compare():
        block = _random_block(7)
        split = student_cls(block).eval()

        def refuse(module, inputs):
            raise AssertionError("SplitBottleneck calls the block's conv1_a, conv1_b, bn1_a or bn1_b")

        for name in ("conv1_a", "conv1_b", "bn1_a", "bn1_b"):
            getattr(block, name).register_forward_pre_hook(refuse)
        convs = [m for m in split.modules() if isinstance(m, torch.nn.Conv2d)
                 and m.kernel_size == (1, 1) and m.out_channels == 2 * block.width]
        assert convs, "SplitBottleneck has no 1x1 Conv2d to 2C' channels"
        with torch.no_grad():
            split(torch.randn(2, 16, 9, 7, dtype=torch.float64))
    run("SplitBottleneck (one conv)", "one 1x1 convolution to 2C' channels, split, in place of "
        "conv1_a and conv1_b", compare)


def compare_no_identity(student_cls):
    def compare():
        ref = reference()
        mine_cls = rebased(student_cls, ref.SCConv, ["gate"])                  # your gate only
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(8)
            block = ref.SCConv(6, variant=variant).double().eval()
            _randomise(block, g)
            mine = mine_cls(6, variant=variant).double().eval()
            mine.load_state_dict(block.state_dict())
            x = torch.randn(2, 6, 9, 11, generator=g, dtype=torch.float64)
            with torch.no_grad():
                want = block.k4(block.k3(x) * torch.sigmoid(block.context(x)))
                torch.testing.assert_close(mine(x), want, rtol=1e-10, atol=1e-12)
    run("SCConvNoIdentity", "K4(K3(X1) . sigma(X1')) under copied weights", compare)


def check_rejected_by(rejected_by):
    def compare():
        want = set()
        for name in ("check_scconv_matches_formula", "check_scconv_context_reach"):
            try:
                getattr(checks(), name)(build_mutant("gate-without-identity", "paper"))
            except AssertionError:
                want.add(name)
        assert_equal(rejected_by, want)
    run("rejected_by", "the checks that reject a gate without the identity", compare)


def check_unused_rows(fn):
    def compare():
        for H, r in ((13, 4), (7, 4), (16, 4), (3, 4), (5, 4), (9, 2), (10, 3), (1, 1)):
            block = reference().SCConv(2, pooling_r=r).double().eval()
            _randomise(block, torch.Generator().manual_seed(H + 10 * r))
            x = torch.randn(1, 2, H, H, dtype=torch.float64, requires_grad=True)
            block.context(x).sum().backward()
            want = (x.grad[0].abs().sum((0, 2)) == 0).nonzero().flatten().tolist()
            got = [int(i) for i in fn(H, r)]
            assert got == want, f"unused_rows({H}, {r}) = {got}"
    run("unused_rows", "the rows whose gradient through X1' is zero", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by `new`
# in one code cell loses exactly the points of the tests in `caught` (question.test). Only the
# module question can lose points: the exercises are graded on the reference module
# (SCConvNoIdentity is rebased on it; SplitBottleneck and the check get reference blocks).
BROKEN = {
    # the gate without X1 inside the sigmoid: both formula checks (SCBottleneck holds the student's
    # SCConv), the figure check and both references catch it; the reach checks still see the
    # pooled path and K3's local core.
    "gate-without-identity": ("return torch.sigmoid(x1 + self.context(x1))",
                              "return torch.sigmoid(self.context(x1))",
                              {"scconv_module.check_scconv_matches_formula",
                               "scconv_module.check_sc_bottleneck_matches_formula",
                               "scconv_module.check_sc_bottleneck_matches_figure",
                               "scconv_module.scconv_reference",
                               "scconv_module.sc_bottleneck_reference"}),
    # the classic bilinear slip: align_corners=True in the paper variant. The same tests as above;
    # the field of view does not change.
    "align-corners": ('return F.interpolate(f2, size=size, mode="bilinear", align_corners=False)',
                      'return F.interpolate(f2, size=size, mode="bilinear", align_corners=True)',
                      {"scconv_module.check_scconv_matches_formula",
                       "scconv_module.check_sc_bottleneck_matches_formula",
                       "scconv_module.check_sc_bottleneck_matches_figure",
                       "scconv_module.scconv_reference",
                       "scconv_module.sc_bottleneck_reference"}),
    # the figure's [Y1; Y2] order with the code's conv3 weights (which expect [Y2; Y1]): only the
    # block's tests catch it; SCConv itself is right.
    "halves-in-figure-order": ("y = torch.cat([self.k1(x2), self.scconv(x1)], dim=1)",
                               "y = torch.cat([self.scconv(x1), self.k1(x2)], dim=1)",
                               {"scconv_module.check_sc_bottleneck_matches_formula",
                                "scconv_module.check_sc_bottleneck_matches_figure",
                                "scconv_module.sc_bottleneck_reference"}),
}
