"""The PSA chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

CHECK_NAMES = ("check_psa_branches_match_formula", "check_psa_matches_formula",
               "check_psa_composition", "check_psa_attention_shapes", "check_psa_softmax_axes",
               "check_psa_internal_width")

SPEC = {
    "module": "psa",
    # The formulas are taught cell by cell and stay (as in the SE chapter); the written-order
    # functions of the Cost section use the module's own layers and answer no question.
    "remove": [],
    "questions": [
        {
            "name": "psa_module",
            "label": None,
            "cell": "class PSAParallel(_PSA):",
            "stub": ["PSAChannel.weights", "PSAChannel.gate", "PSASpatial.query",
                     "PSASpatial.weights", "PSASpatial.gate", "PSAParallel.forward",
                     "PSASequential.forward"],
            "prompt": (
                "**Write the module (17 points).** In the cell below, write the bodies of "
                "`PSAChannel.weights`, `PSAChannel.gate`, `PSASpatial.query`, "
                "`PSASpatial.weights`, `PSASpatial.gate`, `PSAParallel.forward` and "
                "`PSASequential.forward`, as their docstrings, the equations above and the "
                "section *Paper versus official code* say, for the three forms "
                "(`self.form`: `\"paper\"`, `\"official_p\"`, `\"official_s\"`). Apply $W_z$ as "
                "the layer `self.w_z` to the `(B, C/2, 1, 1)` context (it holds the LayerNorm, "
                "or the official bottleneck); the helpers `_flat`, `_project`, `_softmax` and "
                "`_weight_matrix` above the classes are yours to use. The constructors are given: "
                "keep the attribute names, the tests copy weights into them. Public test: the "
                "output shapes (1 point). Hidden tests, each on `PSAParallel(32)` and "
                "`PSASequential(32)` in both variants: the chapter's six derivation checks "
                "(2 points each), the official-code check in the official variant (2 points) "
                "and equality with the reference modules under copied weights (2 points)."),
            "args": "PSAParallel, PSASequential",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'PSAParallel(16) and PSASequential(16) map (2, 16, 7, 9) "
                 "to (2, 16, 7, 9)', lambda: (G.assert_shape(PSAParallel(16), (2, 16, 7, 9)), "
                 "G.assert_shape(PSASequential(16), (2, 16, 7, 9))))"),
                *[(name, 2, True, f"G.run_check_layouts({name!r}, PSAParallel, PSASequential)")
                  for name in CHECK_NAMES],
                ("check_psa_matches_official_code", 2, True,
                 "G.run_check_layouts('check_psa_matches_official_code', PSAParallel, "
                 "PSASequential, variants=('official',))"),
                ("reference", 2, True,
                 "(G.compare_with_reference('PSAParallel', PSAParallel, dict(channels=32), "
                 "(2, 5, 7)), G.compare_with_reference('PSASequential', PSASequential, "
                 "dict(channels=32), (2, 5, 7)))"),
            ],
        },
        {
            "name": "both_from_x",
            "label": "psa-ex-both-from-x",
            "stub": ["PSABothFromX", "rejected_both_from_x"],
            "args": "PSABothFromX, rejected_both_from_x",
            "tests": [
                ("forward", 2, True, "G.compare_sequential_forward(PSABothFromX, 'both-from-x')"),
                ("rejected_by", 1, True,
                 "G.check_rejected_by(rejected_both_from_x, 'BothGatesFromX', "
                 "'rejected_both_from_x')"),
            ],
        },
        {
            "name": "direction",
            "label": "psa-ex-direction",
            "stub": ["spatial_direction"],
            "args": "spatial_direction",
            "tests": [("spatial_direction", 2, True,
                       "G.check_spatial_direction(spatial_direction)")],
        },
        {
            "name": "check_range",
            "label": "psa-ex-check-range",
            "stub": ["check_psa_p_spatial_gate_range"],
            "args": "check_psa_p_spatial_gate_range",
            "tests": [
                ("accepts_psa_p", 1, True,
                 "G.expect_accepts(check_psa_p_spatial_gate_range, 'PSAParallel', "
                 "variants=('official',))"),
                ("rejects_paper_softmax", 1, True,
                 "G.expect_rejects(check_psa_p_spatial_gate_range, 'official-paper-softmax-swap', "
                 "variants=('official',))"),
                ("rejects_branches_swapped", 1, True,
                 "G.expect_rejects(check_psa_p_spatial_gate_range, 'branches-swapped', "
                 "variants=('official',))"),
            ],
        },
        {
            "name": "spatial_first",
            "label": "psa-ex-spatial-first",
            "stub": ["PSASpatialFirst", "rejected_spatial_first"],
            "args": "PSASpatialFirst, rejected_spatial_first",
            "tests": [
                ("forward", 2, True,
                 "G.compare_sequential_forward(PSASpatialFirst, 'spatial-first')"),
                ("rejected_by", 1, True,
                 "G.check_rejected_by(rejected_spatial_first, 'SpatialFirst', "
                 "'rejected_spatial_first')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, rebased, ...).
HELPERS = '''
WIDTH = 32           # the chapter's checks run at C = 32: the official PSA_s bottleneck is 4 wide


def build(cls, variant):
    """A block as tests/test_derivation_psa.py builds it."""
    return cls(WIDTH, variant=variant)


def build_mutant(name, variant):
    """MUTANTS[name] = (cls, breakage or None, variants, checks)."""
    cls, breakage = mutants().MUTANTS[name][:2]
    broken = build(cls, variant)
    if breakage is not None:
        breakage(broken)
    return broken


_MUTANT_DOCS = {
    "branches-swapped": "the two branches swapped (channel_only and spatial_only exchanged)",
}


def mutant_doc(name):
    entry = mutants().MUTANTS[name]
    if name in _MUTANT_DOCS:
        return _MUTANT_DOCS[name]
    for obj in (entry[1], entry[0]):
        if obj is not None and obj.__doc__:
            return " ".join(obj.__doc__.split()).split(". ")[0]
    return name


_CHECK_MEANINGS = {                  # the checks' first sentences, on one line
    "check_psa_branches_match_formula":
        "each branch's attention equals its transcription (paper, or official code) in float64",
    "check_psa_matches_formula":
        "the whole block equals psa_formula (parallel sum or sequential composition) in float64",
    "check_psa_composition":
        "sequential = spatial_only(channel_only(x)), parallel = their sum on x, bit for bit",
    "check_psa_attention_shapes":
        "A^ch is (B, C, 1, 1) and A^sp (B, 1, H, W), in (0, 1), rescaling whole channels and "
        "whole positions",
    "check_psa_softmax_axes":
        "the softmax weights are positive and sum to one over the formula's axis",
    "check_psa_internal_width":
        "the parameter tensors are the formula's and the context entering W_z has C/2 entries",
    "check_psa_matches_official_code":
        "an official state dict loads by name and the block equals the official forward pass",
}


def run_check_layouts(check_name, parallel_cls, sequential_cls, variants=("paper", "official")):
    """One derivation check on both layouts of the student's module, in each variant."""
    check = getattr(checks(), check_name)
    meaning = _CHECK_MEANINGS.get(check_name, check_name)
    for cls in (parallel_cls, sequential_cls):
        for variant in variants:
            run(f"{check_name} ({cls.__name__}, variant={variant!r})", meaning,
                lambda: check(build(cls, variant)))


def _sequential_formula(block, x, kind):
    """The expected output, from the checks' transcriptions of the gates with block's weights."""
    c = checks()
    ch, sp, form = c._params(block)
    gate_ch, gate_sp = c.psa_channel_gate_formula, c.psa_spatial_gate_formula
    if kind == "both-from-x":                              # A^ch(X) A^sp(X) X
        return gate_ch(x, ch, form) * gate_sp(x, sp, form) * x
    z_sp = gate_sp(x, sp, form) * x                        # Z^ch(Z^sp(X))
    return gate_ch(z_sp, ch, form) * z_sp


def compare_sequential_forward(student_cls, kind):
    def compare():
        ref = reference()
        mine_cls = rebased(student_cls, ref.PSASequential, ["forward"])    # your forward only
        g = torch.Generator().manual_seed(5)
        for variant in ("paper", "official"):
            block = ref.PSASequential(WIDTH, variant=variant).double().eval()
            _randomise(block, g)
            mine = mine_cls(WIDTH, variant=variant).double().eval()
            mine.load_state_dict(block.state_dict())
            x = torch.randn(2, WIDTH, 5, 4, generator=g, dtype=torch.float64)
            with torch.no_grad():
                torch.testing.assert_close(mine(x), _sequential_formula(block, x, kind),
                                           rtol=1e-10, atol=1e-12, msg=f"variant={variant!r}")
    meaning = {"both-from-x": "A^ch(X) A^sp(X) X, both gates from X",
               "spatial-first": "Z^ch(Z^sp(X)), the spatial branch first"}[kind]
    run(student_cls.__name__, f"{meaning}, under copied weights", compare)


def check_rejected_by(answer, mutant_class, name):
    def compare():
        cls, want = getattr(mutants(), mutant_class), set()     # the broken block of the tests
        for check in mutants().CHECKS:
            try:
                check(cls(WIDTH))
            except AssertionError:
                want.add(check.__name__)
        assert isinstance(answer, (set, frozenset)), (
            f"{name} is a {type(answer).__name__}, not a set")
        assert set(answer) == want, f"got {sorted(answer)!r}"
    run(name, "the names of the checks in CHECKS that reject this block", compare)


def check_spatial_direction(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(6)
        block = ref.PSAParallel(WIDTH).double().eval()
        _randomise(block, g)
        x = torch.randn(2, WIDTH, 6, 7, generator=g, dtype=torch.float64)   # 42 positions > C
        with torch.no_grad():
            w = fn(block, x)
            assert tuple(w.shape) == (2, WIDTH), (
                f"w(X) has shape {tuple(w.shape)}, expected (2, {WIDTH})")
            projected = torch.sigmoid(torch.einsum("bc,bchw->bhw", w, x))[:, None]
            gate = block.spatial_only.gate(x)
            torch.testing.assert_close(projected, gate, rtol=1e-10, atol=1e-12)
    run("spatial_direction",
        "sigmoid(w(X) . x_ij) equals the paper's spatial gate at every position", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test). The
# exercises' classes and functions are graded on the reference module; the two `rejected_by`
# answers, though, are computed in the notebook by running the checks on subclasses of the
# student's PSASequential, so a broken gate changes them (as the SE chapter's `rejected_by`).
BROKEN = {
    # The port that computes both gates from X. The branches are right (their checks pass, and the
    # exercises' subclasses override forward), the block is not: the formula, the composition, the
    # official code and the reference all differ.
    "sequential-both-from-x": (
        "return self.spatial_only(self.channel_only(x))",
        "return self.channel_only.gate(x) * self.spatial_only.gate(x) * x",
        {"psa_module.check_psa_matches_formula", "psa_module.check_psa_composition",
         "psa_module.check_psa_matches_official_code", "psa_module.reference"}),
    # The channel softmax over its single query channel (dim 1) instead of the H*W positions: every
    # weight is 1 and the context is W_v times the sum of X over the positions. The softmax check
    # and every comparison catch it; in the official PSA_p (no LayerNorm) that large context
    # saturates the gate to exactly 1, which the shape-and-range check rejects. The composition of
    # the (wrong) branches and the width entering W_z are unchanged. In the notebook the
    # exercises' subclasses inherit the wrong gate: the branch formula and the softmax check now
    # reject them too, and both `rejected_by` answers lose their point.
    "channel-softmax-over-the-query-channel": (
        "return _softmax(q, 2).view(x.shape[0], 1, x.shape[2], x.shape[3])",
        "return _softmax(q, 1).view(x.shape[0], 1, x.shape[2], x.shape[3])",
        {"psa_module.check_psa_branches_match_formula", "psa_module.check_psa_matches_formula",
         "psa_module.check_psa_softmax_axes", "psa_module.check_psa_attention_shapes",
         "psa_module.check_psa_matches_official_code", "psa_module.reference",
         "both_from_x.rejected_by", "spatial_first.rejected_by"}),
    # The paper's spatial softmax over the batch (dim 0) instead of the C/2 channels: only the
    # paper form uses it, so the official-code check passes; the gate stays in (0, 1) and per
    # position. The `rejected_by` answers change as in the case above.
    "spatial-softmax-over-the-batch": (
        "return _softmax(self.query(x), 1)",
        "return _softmax(self.query(x), 0)",
        {"psa_module.check_psa_branches_match_formula", "psa_module.check_psa_matches_formula",
         "psa_module.check_psa_softmax_axes", "psa_module.reference",
         "both_from_x.rejected_by", "spatial_first.rejected_by"}),
}
