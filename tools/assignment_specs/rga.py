"""The RGA chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format). RGA modules are built for one
map size: every hidden test uses the small configuration of tests/test_derivation_rga.py
(C = 6 on a 4 x 5 map, cha_ratio=2, spa_ratio=4, down_ratio=2: 20 positions), where each
derivation check runs in a fraction of a second."""

CHECK_NAMES = ("check_rga_matches_formula", "check_rga_relation_vectors",
               "check_rga_depends_on_own_relations", "check_rga_is_a_gate",
               "check_rga_matches_official_replay", "check_rga_half_precision")
METHODS = ("relations", "rows", "cols", "relation_vectors", "pool", "attention_from")

SPEC = {
    "module": "rga",
    "remove": ["def official_rga_forward("],     # the official forward written out on raw tensors
    "questions": [
        {
            "name": "rga_module",
            "label": None,
            "cell": "class RGASpatial(nn.Module):",
            "stub": [f"{cls}.{m}" for cls in ("RGASpatial", "RGAChannel") for m in METHODS],
            "prompt": (
                "**Write the module (15 points).** In the cell below, write the bodies of "
                "`relations`, `rows`, `cols`, `relation_vectors`, `pool` and `attention_from`, in "
                "both `RGASpatial` and `RGAChannel`, as their docstrings and the equations above "
                "say (in RGA-C the channels are the nodes: `nodes(x)` gives their HW-vectors). "
                "The constructors, `nodes`, `attention`, `gate` and `forward` are given: keep the "
                "attribute names, the tests copy weights into them. Public test: the output "
                "shapes (1 point). Hidden tests: the chapter's six derivation checks on both "
                "classes, built as `cls(6, spatial_size=(4, 5), cha_ratio=2, spa_ratio=4, "
                "down_ratio=2)`, in both variants (2 points each), and equality with the "
                "reference modules under copied weights (2 points)."),
            "args": "RGASpatial, RGAChannel",
            "tests": [
                ("shape", 1, False, "; ".join(       # public: only run and assert_shape
                    f"G.run('output shape of {cls}', '{cls}(16, spatial_size=(4, 6)) maps "
                    f"(2, 16, 4, 6) to (2, 16, 4, 6)', lambda: G.assert_shape("
                    f"{cls}(16, spatial_size=(4, 6)), (2, 16, 4, 6)))"
                    for cls in ("RGASpatial", "RGAChannel"))),
                *[(name, 2, True, f"G.run_check_on({name!r}, RGASpatial, RGAChannel)")
                  for name in CHECK_NAMES],
                ("reference", 2, True, "G.compare_both(RGASpatial, RGAChannel)"),
            ],
        },
        {
            "name": "stacked",
            "label": "rga-ex-stacked",
            "stub": ["StackedRGA", "SwappedRGA", "rejected_by"],
            "args": "StackedRGA, SwappedRGA, rejected_by",
            "tests": [
                ("stacked_relation_vectors", 2, True,
                 "G.check_relation_vectors(StackedRGA, swapped=False)"),
                ("swapped_relation_vectors", 1, True,
                 "G.check_relation_vectors(SwappedRGA, swapped=True)"),
                ("rejected_by", 1, True,
                 "G.run('rejected_by', 'the checks of CHECKS that reject the swapped order', "
                 "lambda: G.assert_equal(rejected_by, G.checks_rejecting_swapped()))"),
            ],
        },
        {
            "name": "memory",
            "label": "rga-ex-memory",
            "stub": ["r_gib", "first_size"],
            "args": "r_gib, first_size",
            "tests": [
                ("r_gib", 1, True, "G.check_r_gib(r_gib)"),
                ("first_size", 1, True, "G.check_first_size(first_size)"),
            ],
        },
        {
            "name": "official_widths",
            "label": "rga-ex-official-widths",
            "stub": ["official_w1_width", "first_working_c"],
            "args": "official_w1_width, first_working_c",
            "tests": [
                ("official_w1_width", 1, True, "G.check_official_w1_width(official_w1_width)"),
                ("first_working_c", 1, True, "G.check_first_working_c(first_working_c)"),
            ],
        },
        {
            "name": "check_direction",
            "label": "rga-ex-check-direction",
            "stub": ["check_rga_relations_are_query_key"],
            "args": "check_rga_relations_are_query_key",
            "tests": [
                ("accepts_rga_spatial", 1, True,
                 "G.expect_accepts(check_rga_relations_are_query_key, 'RGASpatial')"),
                ("rejects_transposed_r", 1, True,
                 "G.expect_rejects(check_rga_relations_are_query_key, 'transposed-R')"),
                ("rejects_no_relu", 1, True,
                 "G.expect_rejects(check_rga_relations_are_query_key, 'no-relu-on-QK')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, run_check, reference, checks, mutants, _randomise, rebased, ...). The blocks are
# built as tests/test_derivation_rga.py builds them (its `build`, with its KWARGS); its MUTANTS
# entries are (mixin, breakage, checks), and the "write the check" exercise is about RGA-S.
HELPERS = '''
KWARGS = dict(spatial_size=(4, 5), cha_ratio=2, spa_ratio=4, down_ratio=2)


def build(cls, variant):
    """cls(6, variant=variant, spatial_size=(4, 5), cha_ratio=2, spa_ratio=4, down_ratio=2)."""
    return mutants().build(cls, variant)


def build_mutant(name, variant):
    """The broken RGASpatial `name` of tests/test_derivation_rga.py: MUTANTS[name] is (mixin,
    breakage, checks); the mixin comes before the class, the breakage edits the built block."""
    mixin, breakage = mutants().MUTANTS[name][:2]
    broken = mutants().build(reference().RGASpatial, variant, mixin)
    if breakage is not None:
        breakage(broken)
    return broken


_MEANINGS = {"no-relu-on-QK": "Q and K without their ReLU, so R can be negative",
             "max-pool": "g^c_avg replaced by a max over the embedded channels",
             "no-sigmoid": "the gate without its sigmoid"}


def mutant_doc(name):
    """The first line of the mutant's class docstring, or what its breakage function does."""
    for obj in mutants().MUTANTS[name][:2]:
        if isinstance(obj, type) and obj.__doc__:
            return obj.__doc__.strip().splitlines()[0]
    return _MEANINGS.get(name, name)


def _one_line(cls, e):
    return " ".join(f"{cls.__name__}: {e}".split())           # the checks' docstrings wrap


def run_check_on(check_name, *classes):
    """run_check on each of the student's classes, built as the derivation tests build them; the
    feedback line names the class."""
    for cls in classes:
        try:
            run_check(check_name, lambda variant: cls(6, variant=variant, **KWARGS))
        except AssertionError as e:
            raise AssertionError(_one_line(cls, e)) from None


def compare_both(*classes):
    for cls in classes:
        compare_with_reference(cls.__name__, cls, dict(channels=6, **KWARGS), (2, 4, 5))


def check_relation_vectors(student_cls, swapped):
    """relation_vectors of the student's subclass (on the reference RGASpatial) against
    [R(i, :); R(:, i)] (swapped: [R(:, i); R(i, :)]) written with plain reshapes, and the whole
    block against the reference block with that relation_vectors, under copied weights."""
    name = student_cls.__name__ if isinstance(student_cls, type) else "your class"
    want = "[R(:, i); R(i, :)]" if swapped else "[R(i, :); R(:, i)]"

    def expected_vectors(self, rel):
        halves = [self.cols(rel), self.rows(rel)] if swapped else [self.rows(rel), self.cols(rel)]
        return torch.cat(halves, dim=1)

    def compare():
        ref = reference()
        assert isinstance(student_cls, type), f"{name} is not a class"
        mine_cls = rebased(student_cls, ref.RGASpatial, ["relation_vectors"])   # yours only
        g = torch.Generator().manual_seed(7)
        for (h, w) in ((4, 5), (3, 2)):
            block = mine_cls(6, spatial_size=(h, w), cha_ratio=2, spa_ratio=4, down_ratio=2)
            R = torch.randn(2, h * w, h * w, generator=g, dtype=torch.float64)
            rows = R.transpose(1, 2).reshape(2, h * w, h, w)    # channel j at position i: R(i, j)
            cols = R.reshape(2, h * w, h, w)                    # channel j at position i: R(j, i)
            expected = torch.cat([cols, rows] if swapped else [rows, cols], dim=1)
            assert bool(expected[0, 1, 0, 0] == (R[0, 1, 0] if swapped else R[0, 0, 1]))
            with torch.no_grad():
                got = block.relation_vectors(R)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        base = type("Expected", (ref.RGASpatial,), {"relation_vectors": expected_vectors})
        for variant in ("paper", "official"):
            block = base(6, variant=variant, **KWARGS).double().eval()
            _randomise(block, g)
            mine = mine_cls(6, variant=variant, **KWARGS).double().eval()
            mine.load_state_dict(block.state_dict())
            x = torch.randn(2, 6, 4, 5, generator=g, dtype=torch.float64)
            with torch.no_grad():
                torch.testing.assert_close(mine(x), block(x), rtol=1e-10, atol=1e-12)
    run(name, f"relation_vectors returns r_i = {want}, shape (B, 2HW, H, W)", compare)


def checks_rejecting_swapped():
    """The names of the chapter's CHECKS that raise an AssertionError on the reference RGASpatial
    with the swapped-order mixin of tests/test_derivation_rga.py, at the exercise's size."""
    mixin = mutants().MUTANTS["swapped-order"][0]
    broken_cls = type("SwappedRGA", (mixin, reference().RGASpatial), {})
    names = set()
    for check in checks().CHECKS:
        try:
            check(broken_cls(6, **KWARGS))
        except AssertionError:
            names.add(check.__name__)
    return names


def check_r_gib(fn):
    def compare():
        for (h, w, batch) in ((64, 32, None), (7, 9, 3), (10, 5, 2), (1, 1, 1)):
            got = fn(h, w) if batch is None else fn(h, w, batch=batch)
            want = (64 if batch is None else batch) * (h * w) ** 2 * 4 / 2 ** 30
            assert_close_number(got, want)
    run("r_gib", "batch x (hw)^2 float32 entries of 4 bytes, in units of 2^30 bytes "
        "(batch=64 by default)", compare)


def check_first_size(first_size):
    want = next((2 * w, w) for w in range(1, 10**4) if 64 * (2 * w * w) ** 2 * 4 >= 2 ** 30)
    run("first_size", "the first (2W, W) at which 64 (2W^2)^2 float32 entries reach 2^30 bytes",
        lambda: assert_equal(first_size, want))


def check_official_w1_width(widths):
    want = {c: (1 + c // 8) // 8 for c in (16, 64, 256, 2048)}
    run("official_w1_width", "the official W_1 width of RGA-C is (1 + C // 8) // 8",
        lambda: assert_equal(widths, want))


def check_first_working_c(first_working_c):
    want = next(c for c in range(1, 10**4) if (1 + c // 8) // 8 >= 1)
    run("first_working_c", "the smallest C with (1 + C // 8) // 8 >= 1",
        lambda: assert_equal(first_working_c, want))
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell (the module's; each line of the first two is in both classes, a student
# writes them alike) loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # r_i = [R(:, i); R(i, :)]: "Gs_in" read as the column. The checks that pin which relation is
    # in which channel reject it (formula, relation vectors, official replay) and so does the
    # reference; the dependency, gate and float16 checks do not look at the order. The exercises
    # override relation_vectors or use the reference, so they keep their points.
    "swapped-order": ("return torch.cat([self.rows(relations), self.cols(relations)], dim=1)",
                      "return torch.cat([self.cols(relations), self.rows(relations)], dim=1)",
                      {"rga_module.check_rga_matches_formula",
                       "rga_module.check_rga_relation_vectors",
                       "rga_module.check_rga_matches_official_replay", "rga_module.reference"}),
    # g^c_avg as a max over the embedded channels: only the checks that compute the whole gate
    # from the equations (formula, official replay) and the reference see it.
    "max-pool": ("return t.mean(dim=1, keepdim=True)", "return t.amax(dim=1, keepdim=True)",
                 {"rga_module.check_rga_matches_formula",
                  "rga_module.check_rga_matches_official_replay", "rga_module.reference"}),
    # RGA-S without its sigmoid (the logit used as the gain): the formula, official replay and
    # reference see it; so does the gate check (gains outside (0, 1)) and the float16 check (the
    # unbounded gain, cast to float16 and times inputs of size 300, is not finite). SwappedRGA
    # inherits the bug, so the gate and float16 checks reject it too, and the student's
    # rejected_by (computed on their own RGASpatial) no longer matches the reference's.
    "no-sigmoid": ("return self.sigmoid(self.W_spatial(y))", "return self.W_spatial(y)",
                   {"rga_module.check_rga_matches_formula", "rga_module.check_rga_is_a_gate",
                    "rga_module.check_rga_matches_official_replay",
                    "rga_module.check_rga_half_precision", "rga_module.reference",
                    "stacked.rejected_by"}),
}
