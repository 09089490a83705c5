"""The SimAM chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

CHECK_NAMES = ("check_simam_matches_formula", "check_simam_gate_is_minimal_energy",
               "check_simam_has_no_parameters", "check_simam_gate_range")

SPEC = {
    "module": "simam",
    "remove": [],                    # the chapter's cells before the module are its equations, kept
    "questions": [
        {
            "name": "simam_module",
            "label": None,
            "cell": "class SimAM(nn.Module):",
            "stub": ["SimAM.variance_divisor", "SimAM.inverse_energy", "SimAM.forward"],
            "prompt": (
                "**Write the module (11 points).** In the cell below, write the bodies of "
                "`SimAM.variance_divisor`, `SimAM.inverse_energy` and `SimAM.forward`, as their "
                "docstrings and equations (4)-(5) say, in both variants (the paper's divisor $M$, "
                "the official code's $M - 1$). The constructor is given: keep its attributes. "
                "Public test: the output shape (1 point). Hidden tests: the chapter's four "
                "derivation checks on `SimAM(6)` in both variants (2 points each; the "
                "parameter-free check runs after one forward pass) and equality with the "
                "reference module (2 points)."),
            "args": "SimAM",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shape', 'SimAM(16) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                 "lambda: G.assert_shape(SimAM(16), (2, 16, 7, 9)))"),
                *[(name, 2, True,
                   f"G.run_check({name!r}, "
                   "lambda variant: G.after_a_forward(SimAM(6, variant=variant)))")
                  for name in CHECK_NAMES],
                ("reference", 2, True,
                 "G.compare_with_reference('SimAM', SimAM, dict(channels=6, e_lambda=0.05), "
                 "(2, 5, 7))"),
            ],
        },
        {
            "name": "official",
            "label": "simam-ex-official",
            "stub": ["simam_official"],
            "args": "simam_official",
            "tests": [("simam_official", 2, True, "G.check_simam_official(simam_official)")],
        },
        {
            "name": "exact",
            "label": "simam-ex-exact",
            "stub": ["SimAMExact"],
            "args": "SimAMExact",
            "tests": [("inverse_energy", 2, True, "G.check_simam_exact(SimAMExact)")],
        },
        {
            "name": "invariances",
            "label": "simam-ex-invariances",
            "stub": ["equivalent_lambda"],
            "args": "equivalent_lambda",
            "tests": [("equivalent_lambda", 2, True,
                       "G.check_equivalent_lambda(equivalent_lambda)")],
        },
        {
            "name": "check_permutation",
            "label": "simam-ex-check-permutation",
            "stub": ["check_simam_gates_follow_the_neurons"],
            "args": "check_simam_gates_follow_the_neurons",
            "tests": [
                ("accepts_simam", 1, True,
                 "G.expect_accepts(check_simam_gates_follow_the_neurons, 'SimAM')"),
                ("rejects_variance_over_channels", 1, True,
                 "G.expect_rejects(check_simam_gates_follow_the_neurons, "
                 "'variance-over-channels')"),
                ("rejects_mean_over_width_only", 1, True,
                 "G.expect_rejects(check_simam_gates_follow_the_neurons, 'mean-over-width-only')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, rebased, ...). The blocks
# are SimAM(6, variant=...), as tests/test_derivation_simam.py builds them; its MUTANTS are
# name: (broken class, checks that reject it).
HELPERS = '''
def build(cls, variant):
    """A block of class `cls` as the chapter's derivation tests build it."""
    return cls(6, variant=variant)


def build_mutant(name, variant):
    """The broken block `name` of tests/test_derivation_simam.py (MUTANTS[name] = (cls, checks))."""
    return build(mutants().MUTANTS[name][0], variant)


# One short line per check (the docstrings' first sentences run to 250 characters).
CHECK_MEANING = {
    "check_simam_matches_formula":
        "the module equals equations (4)-(5) written out, in float64, at two input scales",
    "check_simam_gate_is_minimal_energy":
        "every gate is sigmoid(1 / the numerically minimised energy of equation (2))",
    "check_simam_has_no_parameters":
        "SimAM is parameter-free: no parameters and no buffers, after one forward pass",
    "check_simam_gate_range":
        "sigmoid(1/2) <= gate < sigmoid(upper bound), and sigmoid(1/2) exactly where t = mu",
}


def run_check(check_name, build_student, variants=("paper", "official")):
    """One derivation check of the chapter on the student's module, in each variant."""
    check = getattr(checks(), check_name)
    for variant in variants:
        run(f"{check_name} (variant={variant!r})", CHECK_MEANING[check_name],
            lambda: check(build_student(variant)))


def after_a_forward(module):
    """The module after one forward pass (a parameter created lazily in forward counts too)."""
    with torch.no_grad():
        module(torch.randn(2, module.channels, 5, 7, dtype=torch.float64))
    return module


def _gap(got, want, what, rtol=1e-10):
    assert torch.is_tensor(got), f"{what}: got a {type(got).__name__}, not a tensor"
    assert tuple(got.shape) == tuple(want.shape), (
        f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    gap = ((got.double() - want.double()).abs() / want.double().abs().clamp(min=1e-12)).max().item()
    assert gap <= rtol, f"{what}: max relative difference {gap:.3g}"


def check_simam_official(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(5)
        for shape in ((2, 5, 7, 9), (1, 3, 2, 1), (2, 4, 6, 6)):
            x = torch.randn(*shape, generator=g, dtype=torch.float64)
            _gap(fn(x), ref.SimAM(shape[1], variant="official")(x),
                 f"x of shape {shape}, e_lambda=1e-4")
            x = 0.05 * x
            _gap(fn(x, e_lambda=0.1), ref.SimAM(shape[1], e_lambda=0.1, variant="official")(x),
                 f"x of shape {shape}, e_lambda=0.1")
    with _reference_global(fn, "SimAM", reference().SimAM):
        run("simam_official",
            "x * sigmoid(d / (4 (sum d / (h w - 1) + lambda)) + 1/2), the official code", compare)


def check_simam_exact(student_cls):
    def compare():
        ref = reference()
        mine = rebased(student_cls, ref.SimAM, ["inverse_energy"])(4, e_lambda=0.05)  # yours only
        minimise = checks().minimise_energy
        g = torch.Generator().manual_seed(6)
        x = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) * 0.3 + 0.1
        with torch.no_grad():
            got = mine.inverse_energy(x)
        assert torch.is_tensor(got) and tuple(got.shape) == tuple(x.shape), (
            "inverse_energy must return (B, C, H, W)")
        want = torch.empty_like(x)
        for b in range(2):
            for c in range(4):
                flat = x[b, c].flatten()
                for k in range(flat.numel()):
                    _, _, e_min = minimise(flat[k], torch.cat([flat[:k], flat[k + 1:]]), 0.05)
                    want[b, c].view(-1)[k] = 1 / e_min
        _gap(got, want, "1/e against the numerical minimum of equation (2)", rtol=1e-8)
    run("SimAMExact.inverse_energy", "1/e_t^* with the mean and variance of the M - 1 other "
        "neurons equals 1 / the numerical minimum of equation (2)", compare)


def check_equivalent_lambda(fn):
    def compare():
        ref = reference()
        g = torch.Generator().manual_seed(7)
        x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
        for lam in (1e-4, 0.1):
            for factor in (10.0, 1e-3, -2.0, 0.5):
                new = fn(lam, factor)
                assert isinstance(new, (int, float)) or torch.is_tensor(new), f"got {new!r}"
                scaled = ref.SimAM(3, e_lambda=lam)(factor * x) / (factor * x)
                _gap(ref.SimAM(3, e_lambda=float(new))(x) / x, scaled,
                     f"equivalent_lambda({lam:g}, {factor:g}) = {float(new):.3g}")
    with _reference_global(fn, "SimAM", reference().SimAM):
        run("equivalent_lambda", "SimAM(lambda') on x gates as SimAM(lambda) on factor * x",
            compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test). Each of
# these loses the two value checks, the range check and the reference; the exercises are graded
# apart from the student's SimAM, and the module stays parameter-free.
VALUES_AND_RANGE = {"simam_module.check_simam_matches_formula",
                    "simam_module.check_simam_gate_is_minimal_energy",
                    "simam_module.check_simam_gate_range", "simam_module.reference"}
BROKEN = {
    # the variants' divisors swapped: the two value checks and the reference fail in both variants;
    # the range check fails in the official variant, whose bound (M - 1)^2 / (4 M) + 1/2 the
    # distinctive neuron exceeds with the divisor M.
    "divisor-swapped": ("return m - 1 if self.unbiased else m",
                        "return m if self.unbiased else m - 1", VALUES_AND_RANGE),
    # 1/e without its + 1/2: the gate can fall to sigmoid(0) = 1/2 < sigmoid(1/2)
    "no-plus-half": ("return d * (0.25 / (var + self.e_lambda)) + 0.5",
                     "return d * (0.25 / (var + self.e_lambda))", VALUES_AND_RANGE),
    # the mean over the channels instead of the map (the classic axis bug); the variance still
    # sums over the map, and the gate at t = mu is no longer sigmoid(1/2)
    "mean-over-channels": ("d = (x - x.mean((2, 3), keepdim=True)).square()",
                           "d = (x - x.mean(1, keepdim=True)).square()", VALUES_AND_RANGE),
}
