"""The scSE chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

SPEC = {
    "module": "scse",
    # The formulas are taught cell by cell and stay; no cell outside the exercises writes the
    # module's methods out (the official forward pass is the transcription in the checks).
    "remove": [],
    "questions": [
        {
            "name": "scse_module",
            "label": None,
            "cell": "class SCSE(nn.Module):",
            "stub": ["SCSE.channel_gain", "SCSE.spatial_gain", "SCSE.forward"],
            "prompt": (
                "**Write the module (11 points).** In the cell below, write the bodies of "
                "`SCSE.channel_gain`, `SCSE.spatial_gain` and `SCSE.forward`, as their docstrings "
                "and the equations above say: the cSE gain "
                "$\\sigma(W_2 \\delta(W_1 \\mathrm{GAP}(U)))$ of shape `(B, C, 1, 1)`, the sSE "
                "gain $\\sigma(W_{sq} \\star U)$ of shape `(B, 1, H, W)`, and the output "
                "$f(\\hat U_{cSE}, \\hat U_{sSE})$ for each of the four aggregations in "
                "`self.aggregation` (`\"concat\"` puts $\\hat U_{cSE}$ first). "
                "The constructor is given: keep the attribute names, the tests copy weights into "
                "them. Public test: the output shapes (1 point). Hidden tests: the chapter's three "
                "derivation checks on `SCSE(12, reduction=3)`, the first two in both variants and "
                "the official-code check in the official one (2 points each), the formula check "
                "for all four aggregations in both variants (2 points) and equality with the "
                "reference module under copied weights (2 points)."),
            "args": "SCSE",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'SCSE(16, reduction=4) maps (2, 16, 7, 9) to "
                 "(2, 16, 7, 9), (2, 32, 7, 9) with aggregation=\"concat\"', lambda: ("
                 "G.assert_shape(SCSE(16, reduction=4), (2, 16, 7, 9)), "
                 "G.assert_shape(SCSE(16, reduction=4, aggregation='concat'), (2, 16, 7, 9), "
                 "(2, 32, 7, 9))))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, lambda variant: SCSE(12, reduction=3, variant=variant))")
                  for name in ("check_scse_matches_formula",
                               "check_scse_branches_are_channel_and_spatial_gains")],
                ("check_scse_matches_official_code", 2, True,
                 "G.run_check('check_scse_matches_official_code', "
                 "lambda variant: SCSE(12, reduction=3, variant=variant), variants=('official',))"),
                ("aggregations", 2, True, "G.check_every_aggregation(SCSE)"),
                ("reference", 2, True,
                 "G.compare_with_reference('SCSE', SCSE, dict(channels=12, reduction=3), "
                 "(2, 5, 7))"),
            ],
        },
        {
            "name": "half_block",
            "label": "scse-ex-half-block",
            "stub": ["ChannelOnly", "SpatialOnly", "rejected_by"],
            "args": "ChannelOnly, SpatialOnly, rejected_by",
            "tests": [
                ("channel_only", 1, True, "G.compare_half_block(ChannelOnly, 'spatial_gain')"),
                ("spatial_only", 1, True, "G.compare_half_block(SpatialOnly, 'channel_gain')"),
                ("rejected_by", 1, True, "G.check_half_block_verdicts(rejected_by)"),
            ],
        },
        {
            "name": "max_out",
            "label": "scse-ex-max-out",
            "stub": ["max_out"],
            "args": "max_out",
            "tests": [("max_out", 1, True, "G.check_max_out(max_out)")],
        },
        {
            "name": "add_max",
            "label": "scse-ex-add-max",
            "stub": ["silence_sse"],
            "args": "silence_sse",
            "tests": [("silence_sse", 2, True, "G.check_silence_sse(silence_sse)")],
        },
        {
            "name": "check_axes",
            "label": "scse-ex-check-axes",
            "stub": ["check_scse_gains_pool_the_right_axes"],
            "args": "check_scse_gains_pool_the_right_axes",
            "tests": [
                ("accepts_scse", 1, True,
                 "G.expect_accepts(check_scse_gains_pool_the_right_axes, 'SCSE')"),
                ("rejects_max_squeeze", 1, True,
                 "G.expect_rejects(check_scse_gains_pool_the_right_axes, 'cse-max-squeeze')"),
                ("rejects_sse_pooling_space", 1, True,
                 "G.expect_rejects(check_scse_gains_pool_the_right_axes, 'sse-pools-space')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, rebased, ...).
HELPERS = '''
_CHECK_MEANINGS = {
    "check_scse_matches_formula":
        "the module equals the scSE equations (scse_formula) in float64, with biases in the "
        "official variant only",
    "check_scse_branches_are_channel_and_spatial_gains":
        "with concat, the first C channels are U times a gain in (0, 1) per channel, the last C "
        "U times a gain in (0, 1) per position",
    "check_scse_matches_official_code":
        "an official state dict loads by name and the block equals the official "
        "ChannelSpatialSELayer",
}


def run_check(check_name, build_student, variants=("paper", "official")):
    """One derivation check of the chapter on the student's module, in each variant (the checks'
    docstrings wrap their first sentence over lines: the meaning is said here on one line)."""
    check = getattr(checks(), check_name)
    meaning = (_CHECK_MEANINGS.get(check_name)
               or " ".join((check.__doc__ or check_name).split()).split(". ")[0])
    for variant in variants:
        run(f"{check_name} (variant={variant!r})", meaning, lambda: check(build_student(variant)))


def build_mutant(name, variant):
    """MUTANTS[name] = (cls, constructor keywords, breakage or None, checks): the mutant's own
    keywords win over the variant asked for (its breakage may need them)."""
    cls, kwargs, breakage = mutants().MUTANTS[name][:3]
    broken = cls(12, **{"reduction": 3, "variant": variant, **kwargs})
    if breakage is not None:
        breakage(broken)
    return broken


_MUTANT_DOCS = {                                     # the mutants without a docstring of their own
    "cse-max-squeeze": "the cSE squeeze takes the maximum of each channel, not its mean",
    "cse-no-relu": "the cSE excitation has no ReLU",
    "cse-no-sigmoid": "the cSE gain has no sigmoid",
}


def mutant_doc(name):
    entry = mutants().MUTANTS[name]
    return _MUTANT_DOCS.get(name) or (entry[0].__doc__ or name).strip().splitlines()[0]


def _aggregate(aggregation, u_cse, u_sse):
    """f(U_cSE, U_sSE), written out for the tests."""
    if aggregation == "add":
        return u_cse + u_sse
    if aggregation == "max":
        return torch.where(u_cse >= u_sse, u_cse, u_sse)
    if aggregation == "mul":
        return u_cse * u_sse
    return torch.cat([u_cse, u_sse], dim=1)


def check_every_aggregation(student_cls):
    check = checks().check_scse_matches_formula
    for variant in ("paper", "official"):
        for aggregation in ("add", "max", "mul", "concat"):
            kwargs = dict(reduction=3, variant=variant, aggregation=aggregation)
            run(f"check_scse_matches_formula (variant={variant!r}, aggregation={aggregation!r})",
                "the module equals the scSE equations with this aggregation f",
                lambda: check(student_cls(12, **kwargs)))


def compare_half_block(student_cls, method):
    """Your `method` on the reference SCSE: the switched-off branch is U itself."""
    def compare():
        ref = reference()
        half = rebased(student_cls, ref.SCSE, [method])                 # your override only
        g = torch.Generator().manual_seed(5)
        for variant in ("paper", "official"):
            for aggregation in ("add", "max", "mul", "concat"):
                kwargs = dict(reduction=3, variant=variant, aggregation=aggregation)
                block = ref.SCSE(12, **kwargs).double().eval()
                _randomise(block, g)
                mine = half(12, **kwargs).double().eval()
                mine.load_state_dict(block.state_dict())
                u = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
                with torch.no_grad():
                    u_cse = u if method == "channel_gain" else u * block.channel_gain(u)
                    u_sse = u if method == "spatial_gain" else u * block.spatial_gain(u)
                    want = _aggregate(aggregation, u_cse, u_sse)
                    where = f"variant={variant!r}, aggregation={aggregation!r}"
                    torch.testing.assert_close(mine(u), want, rtol=1e-10, atol=1e-12, msg=where)
    other = "sSE" if method == "spatial_gain" else "cSE"
    run(student_cls.__name__, f"SCSE with the {other} gain replaced by ones, under copied weights",
        compare)


def _half_blocks():
    ref = reference()

    class ChannelOnly(ref.SCSE):
        def spatial_gain(self, u):
            return torch.ones_like(u[:, :1])

    class SpatialOnly(ref.SCSE):
        def channel_gain(self, u):
            return torch.ones_like(u[:, :, :1, :1])

    return {"ChannelOnly": ChannelOnly, "SpatialOnly": SpatialOnly}


def check_half_block_verdicts(rejected_by):
    def compare():
        names = ("check_scse_matches_formula", "check_scse_branches_are_channel_and_spatial_gains")
        want = {}
        for name, cls in _half_blocks().items():                     # the checks run here, on ours
            want[name] = set()
            for check_name in names:
                try:
                    getattr(checks(), check_name)(cls(16))
                except AssertionError:
                    want[name].add(check_name)
        assert isinstance(rejected_by, dict), (
            f"rejected_by is a {type(rejected_by).__name__}, not a dict")
        for name in want:
            got = rejected_by.get(name)
            assert set(got or ()) == want[name], f"{name}: got {got!r}"
    run("rejected_by", "the checks that reject each half block", compare)


def check_max_out(fn):
    def compare():
        ref = reference()

        class NoForward(ref.SCSE):
            def forward(self, u):
                raise AssertionError("max_out called block(u)")

        g = torch.Generator().manual_seed(6)
        block = ref.SCSE(12, reduction=3, variant="official").double().eval()
        _randomise(block, g)
        u = torch.randn(2, 12, 6, 5, generator=g, dtype=torch.float64)
        sealed = NoForward(12, reduction=3, variant="official").double().eval()
        sealed.load_state_dict(block.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(fn(sealed, u), block(u), rtol=1e-10, atol=1e-12)
    run("max_out", "the official block's output from its two gains, without block(u)", compare)


def check_silence_sse(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(7)
        official = ref.SCSE(12, reduction=3, variant="official").double().eval()
        _randomise(official, g)
        before = {k: v.clone() for k, v in official.state_dict().items()}
        with _reference_global(fn, "SCSE", ref.SCSE):                # graded apart from your SCSE
            quiet = fn(official)
        assert all(torch.equal(official.state_dict()[k], v) for k, v in before.items()), (
            "the block given was changed")
        assert getattr(quiet, "variant", None) == "official", (
            "the result is not an official-variant SCSE")
        assert getattr(quiet, "aggregation", None) == official.aggregation, (
            "the aggregation changed")
        for name in ("w_1.weight", "w_1.bias", "w_2.weight", "w_2.bias"):
            torch.testing.assert_close(quiet.state_dict()[name], before[name], rtol=0, atol=0,
                                       msg=f"{name} is not the official block's")
        u = 10 * torch.randn(4, 12, 6, 5, generator=g, dtype=torch.float64)
        with torch.no_grad():
            largest = quiet.spatial_gain(u).max().item()
        assert largest < 1e-6, f"an sSE gain of {largest:.3g} on an input of scale 10"
    run("silence_sse",
        "an official block with the same cSE and an sSE gain below 1e-6 on every input", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test). The
# exercise questions grade their own code on the reference module, so only the module's tests fail.
BROKEN = {
    # The classic mix-up: the sSE squeeze pools over space as cSE does. The gain is still in (0, 1)
    # and shared by the channels (the branch check passes), but not the equations or the code.
    "sse-pools-space": ("        return torch.sigmoid(self.w_sq(u))",
                        "        return torch.sigmoid(self.w_sq(u.mean((2, 3), keepdim=True)))",
                        {"scse_module.check_scse_matches_formula",
                         "scse_module.check_scse_matches_official_code",
                         "scse_module.aggregations", "scse_module.reference"}),
    # The ReLU forgotten: the gain is still one per channel in (0, 1), only the formula tells.
    "no-relu": ("s = torch.sigmoid(self.w_2(torch.relu(self.w_1(z))))",
                "s = torch.sigmoid(self.w_2(self.w_1(z)))",
                {"scse_module.check_scse_matches_formula",
                 "scse_module.check_scse_matches_official_code",
                 "scse_module.aggregations", "scse_module.reference"}),
    # [U_sSE; U_cSE]: only "concat" is wrong, which neither variant's default uses, so the formula
    # check in the default aggregations, the official-code check and the reference pass.
    "swapped-concat": ("return torch.cat([u_cse, u_sse], dim=1)                    # (B, 2C, H, W)",
                       "return torch.cat([u_sse, u_cse], dim=1)                    # (B, 2C, H, W)",
                       {"scse_module.check_scse_branches_are_channel_and_spatial_gains",
                        "scse_module.aggregations"}),
}
