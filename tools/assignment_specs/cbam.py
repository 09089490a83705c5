"""The CBAM chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

SPEC = {
    "module": "cbam",
    "remove": ["def official_cbam_forward("],
    "questions": [
        {
            "name": "cbam_module",
            "label": None,
            "cell": "class CBAM(nn.Module):",
            "stub": ["ChannelGate.descriptors", "ChannelGate.forward", "SpatialGate.pooled",
                     "SpatialGate.forward", "CBAM.forward"],
            "prompt": (
                "**Write the module (11 points).** In the cell below, write the bodies of "
                "`ChannelGate.descriptors`, `ChannelGate.forward`, `SpatialGate.pooled`, "
                "`SpatialGate.forward` and `CBAM.forward`, as their docstrings and the equations "
                "above say, in both variants. The constructors are given: keep the attribute "
                "names, the tests copy weights into them. Public test: the output shape (1 point). "
                "Hidden tests: the chapter's four derivation checks on `CBAM(12, reduction=3)` in "
                "both variants (2 points each) and equality with the reference module under "
                "copied weights (2 points)."),
            "args": "CBAM",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'CBAM(16, reduction=4) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(CBAM(16, reduction=4), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: CBAM(12, reduction=3, variant=variant))")
                  for name in ("check_cbam_matches_formula", "check_cbam_channel_mlp_is_shared",
                               "check_cbam_gate_properties", "check_cbam_is_channel_then_spatial")],
                ("reference", 2, True,
                 "G.compare_with_reference('CBAM', CBAM, dict(channels=12, reduction=3), (2, 5, 7))"),
            ],
        },
        {
            "name": "spatial_first",
            "label": "cbam-ex-spatial-first",
            "stub": ["SpatialFirstCBAM", "rejected_by"],
            "args": "SpatialFirstCBAM, rejected_by",
            "tests": [
                ("spatial_first_forward", 2, True,
                 "G.compare_spatial_first(SpatialFirstCBAM)"),
                ("rejected_by", 1, True,
                 "G.run('rejected_by', 'the checks that reject the spatial-first order', lambda: G.assert_equal("
                 "rejected_by, {'check_cbam_matches_formula', 'check_cbam_is_channel_then_spatial'}))"),
            ],
        },
        {
            "name": "parameter_budget",
            "label": "cbam-ex-parameter-budget",
            "stub": ["spatial_fraction", "first_c"],
            "args": "spatial_fraction, first_c",
            "tests": [
                ("spatial_fraction", 1, True,
                 "G.run('spatial_fraction', 'the spatial gate holds 98 of the 8290 parameters of CBAM(256)', "
                 "lambda: G.assert_close_number(spatial_fraction, 98 / (2 * 256 * 16 + 98)))"),
                ("first_c", 1, True,
                 "G.run('first_c', 'the first C with 2 C max(1, C // 16) > 98', "
                 "lambda: G.assert_equal(first_c, 32))"),
            ],
        },
        {
            "name": "official_to_paper",
            "label": "cbam-ex-official-to-paper",
            "stub": ["official_to_paper"],
            "args": "official_to_paper",
            "tests": [
                ("folded", 3, True, "G.check_official_to_paper(official_to_paper)"),
            ],
        },
        {
            "name": "check_max",
            "label": "cbam-ex-check-max",
            "stub": ["check_channel_gate_sees_the_max"],
            "args": "check_channel_gate_sees_the_max",
            "tests": [
                ("accepts_cbam", 1, True,
                 "G.expect_accepts(check_channel_gate_sees_the_max, 'CBAM')"),
                ("rejects_x1_plus_x1", 1, True,
                 "G.expect_rejects(check_channel_gate_sees_the_max, 'x1-plus-x1')"),
                ("rejects_non_global_max", 1, True,
                 "G.expect_rejects(check_channel_gate_sees_the_max, 'non-global-max')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...).
HELPERS = '''
def compare_spatial_first(student_cls):
    def compare():
        ref = reference()
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(5)
            block = ref.CBAM(12, reduction=3, variant=variant).double().eval()
            _randomise(block, g)
            assert "forward" in vars(student_cls), "SpatialFirstCBAM does not define forward"
            rebased = type("SpatialFirstCBAM", (ref.CBAM,), {"forward": student_cls.forward})   # your forward only
            mine = rebased(12, reduction=3, variant=variant).double().eval()
            mine.load_state_dict(block.state_dict())
            x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
            with torch.no_grad():
                f_s = block.spatial_gate(x) * x
                torch.testing.assert_close(mine(x), block.channel_gate(f_s) * f_s, rtol=1e-10, atol=1e-12)
    run("SpatialFirstCBAM", "M_c(F_s) * F_s with F_s = M_s(F) * F, under copied weights", compare)


def check_official_to_paper(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(6)
        official = ref.CBAM(12, reduction=3, variant="official").double().eval()
        _randomise(official, g)
        with torch.no_grad():
            for i in (0, 2):
                official.channel_gate.mlp[i].bias.zero_()
            bn = official.spatial_gate.bn
            bn.bias.copy_(bn.weight / torch.sqrt(bn.running_var + bn.eps) * bn.running_mean)
            x = torch.randn(2, 12, 6, 5, generator=g, dtype=torch.float64)
            want = official(x)
            with _reference_global(fn, "CBAM", ref.CBAM):         # graded apart from your CBAM
                paper = fn(copy.deepcopy(official))
            assert getattr(paper, "variant", None) == "paper", "the result is not a paper-variant CBAM"
            torch.testing.assert_close(paper.eval()(x), want, rtol=1e-10, atol=1e-12)
    run("official_to_paper", "the paper block computes the official block's function", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by `new`
# in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    "x1-plus-x1": ("torch.cat([f.mean((2, 3)), _max_over(f.flatten(2), 2, False)])",
                   "torch.cat([f.mean((2, 3)), f.mean((2, 3))])",
                   {"cbam_module.check_cbam_matches_formula", "cbam_module.check_cbam_channel_mlp_is_shared",
                    "cbam_module.reference", "spatial_first.rejected_by"}),
    "no-spatial-sigmoid": ("return torch.sigmoid(self.bn(self.conv(self.pooled(f))))",
                           "return self.bn(self.conv(self.pooled(f)))",
                           {"cbam_module.check_cbam_matches_formula", "cbam_module.check_cbam_gate_properties",
                            "cbam_module.reference", "spatial_first.rejected_by"}),
}
