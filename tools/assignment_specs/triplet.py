"""The Triplet Attention chapter's assignment: its questions, its grading helpers and its broken
submissions.

Read by tools/assignments.py (see its docstring for the format)."""

CHECK_NAMES = ("check_triplet_matches_formula", "check_rotations", "check_zpool_and_maps",
               "check_output_is_average_of_gated_branches", "check_triplet_official_code")

SPEC = {
    "module": "triplet",
    # The equation cells ("One equation, one cell") are the derivation the student follows, as in
    # the SE chapter; no cell outside the exercises writes the module's methods out.
    "remove": [],
    "questions": [
        {
            "name": "triplet_module",
            "label": None,
            "cell": "class TripletAttention(nn.Module):",
            "stub": ["Rotate90.swap", "Rotate90.forward", "Rotate90.inverse", "ZPool.forward",
                     "AttentionGate.forward", "TripletAttention.attention_maps",
                     "TripletAttention.forward"],
            "prompt": (
                "**Write the module (15 points).** In the cell below, write the bodies of "
                "`Rotate90.swap`, `Rotate90.forward`, `Rotate90.inverse`, `ZPool.forward`, "
                "`AttentionGate.forward`, `TripletAttention.attention_maps` and "
                "`TripletAttention.forward`, as their docstrings and the equations above say, in "
                "both variants (`flip=True`: the true rotation; `flip=False`: the official "
                "permutation) and with `no_spatial=True` (no identity branch, an average of two). "
                "The constructors are given: keep the attribute names, the tests copy weights into "
                "them. Public test: the output shape (1 point). Hidden tests: the chapter's five "
                "derivation checks on `TripletAttention(6, kernel_size=5)` in both variants "
                "(2 points each), the five checks and the comparison with the reference with "
                "`no_spatial=True` (2 points) and equality with the reference module under copied "
                "weights (2 points)."),
            "args": "TripletAttention",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', "
                 "'TripletAttention(16) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(TripletAttention(16), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, "
                   f"lambda variant: TripletAttention(6, kernel_size=5, variant=variant))")
                  for name in CHECK_NAMES],
                ("no_spatial", 2, True, "G.check_no_spatial(TripletAttention)"),
                ("reference", 2, True,
                 "G.compare_with_reference('TripletAttention', TripletAttention, "
                 "dict(channels=6, kernel_size=5), (2, 5, 7))"),
            ],
        },
        {
            "name": "mean_pool",
            "label": "triplet-ex-mean-pool",
            "stub": ["MeanTwice", "MeanPoolTriplet", "rejected_by"],
            "args": "MeanPoolTriplet, rejected_by",
            "tests": [
                ("mean_pool_forward", 2, True, "G.compare_mean_pool(MeanPoolTriplet)"),
                ("rejected_by", 1, True, "G.check_rejected_by(rejected_by)"),
            ],
        },
        {
            "name": "other_direction",
            "label": "triplet-ex-other-direction",
            "stub": ["Rotate90Clockwise", "clockwise"],
            "args": "Rotate90Clockwise, clockwise",
            "tests": [
                ("rotate_clockwise", 2, True, "G.check_rotate_clockwise(Rotate90Clockwise)"),
                ("clockwise", 1, True, "G.check_clockwise(clockwise)"),
            ],
        },
        {
            "name": "parameters",
            "label": "triplet-ex-parameters",
            "stub": ["n_params_triplet", "first_c"],
            "args": "n_params_triplet, first_c",
            "tests": [
                ("n_params_triplet", 1, True,
                 "G.run('n_params_triplet', 'TripletAttention(64) holds three 2 x 7 x 7 kernels', "
                 "lambda: G.assert_equal(n_params_triplet, 3 * 2 * 7 * 7))"),
                ("first_c", 1, True,
                 "G.run('first_c', 'the first C with 2 C max(1, C // 16) + 2 * 7 * 7 > 10 * 294', "
                 "lambda: G.assert_equal(first_c, next(c for c in range(1, 10_000) "
                 "if 2 * c * max(1, c // 16) + 2 * 7 * 7 > 10 * 3 * 2 * 7 * 7)))"),
            ],
        },
        {
            "name": "check_half",
            "label": "triplet-ex-check-half",
            "stub": ["check_zero_kernels_halve_the_input"],
            "args": "check_zero_kernels_halve_the_input",
            "tests": [
                ("accepts_triplet", 1, True,
                 "G.expect_accepts(check_zero_kernels_halve_the_input, 'TripletAttention')"),
                ("rejects_no_sigmoid", 1, True,
                 "G.expect_rejects(check_zero_kernels_halve_the_input, 'no-sigmoid')"),
                ("rejects_half_average", 1, True,
                 "G.expect_rejects(check_zero_kernels_halve_the_input, 'half-average')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...).
HELPERS = f'''
VARIANTS = ("paper", "official")
CHECK_NAMES = {CHECK_NAMES!r}


def build(cls, variant):
    """TripletAttention has no reduction: the blocks of tests/test_derivation_triplet.py."""
    return cls(6, kernel_size=5, variant=variant)


def _meaning(check):
    """The first sentence of a check's docstring, on one line."""
    return " ".join((check.__doc__ or check.__name__).split()).split(". ")[0].rstrip(".")


def check_no_spatial(student_cls):
    for name in CHECK_NAMES:
        check = getattr(checks(), name)
        for variant in VARIANTS:
            run(f"{{name}} (variant={{variant!r}}, no_spatial=True)", _meaning(check),
                lambda: check(student_cls(6, kernel_size=5, variant=variant, no_spatial=True)))
    compare_with_reference("TripletAttention", student_cls,
                           dict(channels=6, kernel_size=5, no_spatial=True), (2, 5, 7))


@contextlib.contextmanager
def _on_reference_base(student_cls, base):
    """The student's subclass with the reference `base` as its base class while grading, so
    that super() and every inherited method are the reference's (graded apart from the
    student's module)."""
    saved = student_cls.__bases__
    student_cls.__bases__ = (base,)
    try:
        yield student_cls
    finally:
        student_cls.__bases__ = saved


def compare_mean_pool(student_cls):
    def compare():
        ref = reference()
        with _on_reference_base(student_cls, ref.TripletAttention):
            for variant in VARIANTS:
                g = torch.Generator().manual_seed(5)
                # the [mean; mean] block of tests/test_derivation_triplet.py
                want = build_mutant("mean-only-zpool", variant).double().eval()
                _randomise(want, g)
                mine = student_cls(6, kernel_size=5, variant=variant).double().eval()
                mine.load_state_dict(want.state_dict())
                x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
                with torch.no_grad():
                    torch.testing.assert_close(mine(x), want(x), rtol=1e-10, atol=1e-12)
    run("MeanPoolTriplet",
        "TripletAttention with [mean; mean] as every gate's Z-pool, under copied weights", compare)


def check_rejected_by(rejected_by):
    def compare():
        broken = build_mutant("mean-only-zpool", "paper")
        want = set()
        for name in CHECK_NAMES:
            try:
                getattr(checks(), name)(broken)
            except AssertionError:
                want.add(name)
        assert_equal(rejected_by, want)
    run("rejected_by", "the names of the checks that reject a mean-only Z-pool", compare)


def _clockwise_reference():
    """Rotate90 with torch.rot90(t, -1, dims) and its inverse, written from torch.rot90."""
    class Clockwise(reference().Rotate90):
        def forward(self, t):
            return torch.rot90(t, -1, dims=(1, 3 if self.about == "h" else 2))

        def inverse(self, y):
            return torch.rot90(y, 1, dims=(1, 3 if self.about == "h" else 2))
    return Clockwise


def check_rotate_clockwise(student_cls):
    def compare():
        g = torch.Generator().manual_seed(7)
        t = torch.randn(2, 4, 5, 7, generator=g, dtype=torch.float64)
        with _on_reference_base(student_cls, reference().Rotate90):
            for about, dims in (("h", (1, 3)), ("w", (1, 2))):
                turn = student_cls(about)
                out = turn(t)
                assert torch.equal(out, torch.rot90(t, -1, dims=dims)), \\
                    f"forward (about={{about!r}}) is not torch.rot90(t, -1, dims={{dims}})"
                y = torch.randn(out.shape, generator=g, dtype=torch.float64)
                assert torch.equal(turn.inverse(y), torch.rot90(y, 1, dims=dims)), \\
                    f"inverse (about={{about!r}}) is not torch.rot90(y, 1, dims={{dims}})"
    run("Rotate90Clockwise", "forward is torch.rot90(t, -1, dims) and inverse undoes it", compare)


def check_clockwise(fn):
    def compare():
        g = torch.Generator().manual_seed(8)
        block = reference().TripletAttention(6, kernel_size=5).double().eval()
        _randomise(block, g)
        before = copy.deepcopy(block.state_dict())
        x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64)
        with torch.no_grad():
            want = block(x)
            # graded apart from your Rotate90Clockwise
            with _reference_global(fn, "Rotate90Clockwise", _clockwise_reference()):
                turned = fn(block)
            for name, dims in (("rotate_h", (1, 3)), ("rotate_w", (1, 2))):
                assert torch.equal(getattr(turned, name)(x), torch.rot90(x, -1, dims=dims)), \\
                    f"the copy's {{name}} is not torch.rot90(X, -1, dims={{dims}})"
            torch.testing.assert_close(turned(x), want, rtol=1e-10, atol=1e-12)
            unchanged = all(torch.equal(v, before[k]) for k, v in block.state_dict().items())
            assert turned is not block and unchanged \\
                and torch.equal(block.rotate_h(x), torch.rot90(x, 1, dims=(1, 3))), \\
                "the block passed in was changed (return a copy)"
    run("clockwise",
        "the clockwise copy with mirrored kernels computes the block's output", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # Z-pool as [mean; max]: the formula, Z-pool and official-code checks compute [max; mean]
    # themselves (with and without no_spatial), and the output differs from the reference. The
    # average check builds Y from the module's own maps and accepts it; MeanPoolTriplet replaces
    # the Z-pool, so its checks (rejected_by) do not change.
    "zpool-mean-max": (
        "return torch.cat([t.amax(1, keepdim=True), t.mean(1, keepdim=True)], dim=1)",
        "return torch.cat([t.mean(1, keepdim=True), t.amax(1, keepdim=True)], dim=1)",
        {"triplet_module.check_triplet_matches_formula", "triplet_module.check_zpool_and_maps",
         "triplet_module.check_triplet_official_code", "triplet_module.no_spatial",
         "triplet_module.reference"}),
    # P^{-1} without the flip (the swap taken for the whole inverse): the module applies P^{-1} only
    # to the maps, whose flipped axis has size 1, so its output and the formula are unchanged; only
    # the checks that rotate X itself back see it (paper variant): check_rotations and the average
    # check. They now also reject MeanPoolTriplet, which inherits the module: rejected_by is wrong.
    "inverse-without-flip": (
        "return x.flip([self.flip_dim]) if self.flip else x",
        "return x",
        {"triplet_module.check_rotations",
         "triplet_module.check_output_is_average_of_gated_branches",
         "triplet_module.no_spatial", "mean_pool.rejected_by"}),
    # the three branches divided by 2: every check that computes Y rejects it, with three branches
    # only (no_spatial is untouched); MeanPoolTriplet inherits it, so the average check now rejects
    # it too and rejected_by is wrong.
    "average-over-two": (
        "return x * (g_1 * (1 / 3) + g_2 * (1 / 3) + self.hw(x) * (1 / 3))",
        "return x * (g_1 + g_2 + self.hw(x)) / 2",
        {"triplet_module.check_triplet_matches_formula",
         "triplet_module.check_output_is_average_of_gated_branches",
         "triplet_module.check_triplet_official_code", "triplet_module.reference",
         "mean_pool.rejected_by"}),
}
