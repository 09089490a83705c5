"""The Global Context chapter's assignment: its questions, its grading helpers and its broken
submissions.

Read by tools/assignments.py (see its docstring for the format)."""

# The checks that hold for a block in both variants; check_gc_identity_at_init holds for a freshly
# built official block only (the paper variant keeps PyTorch's initialisation).
CHECK_NAMES = ("check_gc_matches_formula", "check_gc_attention_is_a_distribution",
               "check_gc_same_for_every_position", "check_gc_official_code")

SPEC = {
    "module": "gc_block",
    # The equation cells and simplified_nl are the derivation the student follows, as in the SE
    # chapter; no cell outside the exercises writes the module's methods out.
    "remove": [],
    "questions": [
        {
            "name": "gc_module",
            "label": None,
            "cell": "class GCBlock(nn.Module):",
            "stub": ["GCBlock.reset_parameters", "GCBlock.attention", "GCBlock.context",
                     "GCBlock.forward"],
            "prompt": (
                "**Write the module (15 points).** In the cell below, write the bodies of "
                "`GCBlock.reset_parameters`, `GCBlock.attention`, `GCBlock.context` and "
                "`GCBlock.forward`, as their docstrings and the equations above say, in both "
                "variants and with every `pooling` and `fusion`. The constructor is given: keep "
                "the attribute names, the tests copy weights into them. Public test: the output "
                "shape (1 point). Hidden tests: the chapter's four derivation checks that hold in "
                "both variants, on `GCBlock(12, reduction=3)` in both variants (2 points each), "
                "the initialisation check on a freshly built official block (2 points), all five "
                "checks with the other poolings and fusions (2 points) and equality with the "
                "reference module under copied weights (2 points)."),
            "args": "GCBlock",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', "
                 "'GCBlock(16, reduction=4) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(GCBlock(16, reduction=4), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, "
                   f"lambda variant: GCBlock(12, reduction=3, variant=variant))")
                  for name in CHECK_NAMES],
                ("check_gc_identity_at_init", 2, True,
                 "G.run_check('check_gc_identity_at_init', "
                 "lambda variant: GCBlock(12, reduction=3, variant=variant), "
                 "variants=('official',))"),
                ("options", 2, True, "G.check_options(GCBlock)"),
                ("reference", 2, True,
                 "G.compare_with_reference('GCBlock', GCBlock, dict(channels=12, reduction=3), "
                 "(2, 5, 7))"),
            ],
        },
        {
            "name": "simplified_nl",
            "label": "gc-ex-simplified-nl",
            "stub": ["SimplifiedNL", "params_ratio"],
            "args": "SimplifiedNL, params_ratio",
            "tests": [
                ("simplified_nl_forward", 2, True, "G.compare_simplified_nl(SimplifiedNL)"),
                ("params_ratio", 1, True,
                 "G.run('params_ratio', 'SimplifiedNL(256) has C + C^2 + C parameters, "
                 "GCBlock(256) C + 2 C^2 / 16 + 2 C / 16', "
                 "lambda: G.assert_close_number(params_ratio, "
                 "(256 + 256 * 256 + 256) / (256 + 2 * 256 * 16 + 2 * 16)))"),
            ],
        },
        {
            "name": "min_width",
            "label": "gc-ex-min-width",
            "stub": ["first_quiet_c", "extra_params"],
            "args": "first_quiet_c, extra_params",
            "tests": [
                ("first_quiet_c", 1, True,
                 "G.run('first_quiet_c', "
                 "'the first C with a hidden width max(1, C // 16) of 3 or more', "
                 "lambda: G.assert_equal(first_quiet_c, next(c for c in range(1, 10_000) "
                 "if max(1, c // 16) >= 3)))"),
                ("extra_params", 1, True,
                 "G.run('extra_params', "
                 "'two more hidden channels cost 2 C + 2 parameters each at C = 32', "
                 "lambda: G.assert_equal(extra_params, (4 - 2) * (2 * 32 + 2)))"),
            ],
        },
        {
            "name": "official_to_paper",
            "label": "gc-ex-official-to-paper",
            "stub": ["official_to_paper"],
            "args": "official_to_paper",
            "tests": [("folded", 3, True, "G.check_official_to_paper(official_to_paper)")],
        },
        {
            "name": "check_constant",
            "label": "gc-ex-check-constant",
            "stub": ["check_gc_context_of_a_constant_map"],
            "args": "check_gc_context_of_a_constant_map",
            "tests": [
                ("accepts_gc", 1, True,
                 "G.expect_accepts(check_gc_context_of_a_constant_map, 'GCBlock')"),
                ("rejects_softmax_over_channels", 1, True,
                 "G.expect_rejects(check_gc_context_of_a_constant_map, 'softmax-over-channels')"),
                ("rejects_softmax_over_width", 1, True,
                 "G.expect_rejects(check_gc_context_of_a_constant_map, 'softmax-over-width')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, ...). The generic
# build, GCBlock(12, reduction=3, variant=variant), and build_mutant (MUTANTS[name][:2]) fit.
HELPERS = f'''
VARIANTS = ("paper", "official")
CHECK_NAMES = {CHECK_NAMES!r}


def _meaning(check):
    """The first sentence of a check's docstring, on one line."""
    return " ".join((check.__doc__ or check.__name__).split()).split(". ")[0].rstrip(".")


def check_options(student_cls):
    """Every check with the pooling and fusion options other than the default (att, add)."""
    for pooling, fusion in (("att", "mul"), ("avg", "add"), ("avg", "mul")):
        for name in CHECK_NAMES + ("check_gc_identity_at_init",):
            check = getattr(checks(), name)
            for variant in (VARIANTS if name in CHECK_NAMES else ("official",)):
                run(f"{{name}} (variant={{variant!r}}, pooling={{pooling!r}}, fusion={{fusion!r}})",
                    _meaning(check),
                    lambda: check(student_cls(12, reduction=3, pooling=pooling, fusion=fusion,
                                              variant=variant)))


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


def compare_simplified_nl(student_cls):
    def compare():
        with _on_reference_base(student_cls, reference().GCBlock):
            for variant in VARIANTS:
                g = torch.Generator().manual_seed(5)
                mine = student_cls(12, reduction=3, variant=variant).double().eval()
                _randomise(mine, g)
                conv = mine.transform[0]
                assert len(mine.transform) == 1 and tuple(conv.weight.shape) == (12, 12, 1, 1) \\
                    and conv.bias is not None, "the transform is not one C x C convolution, biased"
                x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
                # z_i = x_i + W_v sum_j alpha_j x_j + b_v, alpha = softmax_j(W_k x_j + b_k)
                score = torch.einsum("c,bcj->bj", mine.w_k.weight[0, :, 0, 0], x.flatten(2))
                if mine.w_k.bias is not None:
                    score = score + mine.w_k.bias
                context = torch.einsum("bj,bcj->bc", torch.softmax(score, dim=1), x.flatten(2))
                t = context @ conv.weight[:, :, 0, 0].T + conv.bias
                with torch.no_grad():
                    torch.testing.assert_close(mine(x), x + t[:, :, None, None],
                                               rtol=1e-10, atol=1e-12)
    run("SimplifiedNL", "z_i = x_i + W_v sum_j alpha_j x_j + b_v with the block's own weights",
        compare)


def check_official_to_paper(fn):
    def compare():
        ref = reference()
        for pooling, fusion in (("att", "add"), ("att", "mul"), ("avg", "add")):
            g = torch.Generator().manual_seed(6)
            official = ref.GCBlock(12, reduction=3, pooling=pooling, fusion=fusion,
                                   variant="official").double().eval()
            _randomise(official, g)                                    # b_k random
            with torch.no_grad():
                official.transform[0].bias.fill_(float(torch.randn(1, generator=g)))   # one number
                official.transform[3].bias.zero_()
                x = torch.randn(2, 12, 6, 5, generator=g, dtype=torch.float64)
                want = official(x)
                # graded apart from your GCBlock
                with _reference_global(fn, "GCBlock", ref.GCBlock):
                    paper = fn(copy.deepcopy(official))
                assert getattr(paper, "variant", None) == "paper", \\
                    "the result is not a paper-variant GCBlock"
                torch.testing.assert_close(
                    paper.eval()(x), want, rtol=1e-10, atol=1e-12,
                    msg=f"pooling={{pooling!r}}, fusion={{fusion!r}}: another output")
    run("official_to_paper", "the paper block computes the official block's function", compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # the softmax along each row only (the score map's last axis, W): alpha sums to H, not 1. The
    # formula, distribution and official-code checks reject it (also with pooling="att",
    # fusion="mul" in the options test), and the output differs from the reference. The added
    # vector is still one for all positions, and a fresh official block still adds zero.
    "softmax-over-width": (
        "e = self.w_k(x).reshape(batch, height * width)",
        "e = self.w_k(x)[:, 0]",
        {"gc_module.check_gc_matches_formula", "gc_module.check_gc_attention_is_a_distribution",
         "gc_module.check_gc_official_code", "gc_module.options", "gc_module.reference"}),
    # the official initialisation without the zero last convolution: only the initialisation
    # check sees it (default fusion, and fusion="mul" in the options test); every other test
    # randomises or copies the weights.
    "last-conv-not-zero": (
        "nn.init.zeros_(last.weight)",
        "pass",
        {"gc_module.check_gc_identity_at_init", "gc_module.options"}),
    # fusion="mul" computed as an addition: the default fusion is "add", so only the options test
    # (fusion="mul") fails, on the formula, position and official-code checks.
    "add-when-mul": (
        "return x * torch.sigmoid(t)",
        "return x + t",
        {"gc_module.options"}),
}
