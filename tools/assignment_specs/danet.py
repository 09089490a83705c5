"""The DANet chapter's assignment: its questions, its grading helpers and its broken submissions.

Read by tools/assignments.py (see its docstring for the format)."""

# The chapter's checks that apply to each module (the SDPA check is a no-op for the channel
# module, the energy-sign check for the position module).
_SHARED = ("check_danet_matches_formula", "check_danet_identity_at_zero_gamma", "check_danet_rows_sum_to_one")
_PRECISION = ("check_danet_softmax_in_float32", "check_danet_half_precision")
PAM_CHECKS = (*_SHARED, "check_danet_sdpa_matches_explicit", *_PRECISION)
CAM_CHECKS = (*_SHARED, "check_danet_channel_energy_sign", *_PRECISION)

SPEC = {
    "module": "danet",
    # The transcriptions of the official forward passes are the answer, and the timing cell uses
    # one of them.
    "remove": ["def official_pam_forward(", 'runs = {"official transcription"'],
    "questions": [
        {
            "name": "danet_modules",
            "label": None,
            "cell": "class PositionAttention(nn.Module):",
            "stub": [*(f"PositionAttention.{m}" for m in ("project", "attend", "aggregate", "context",
                                                          "forward")),
                     *(f"ChannelAttention.{m}" for m in ("attend", "context", "forward"))],
            "prompt": (
                "**Write the modules (29 points).** In the cell below, write the bodies of "
                "`PositionAttention.project`, `attend`, `aggregate`, `context` and `forward`, and of "
                "`ChannelAttention.attend`, `context` and `forward`, as their docstrings and "
                "equations (1)-(4) say, in both variants (the official channel energy is "
                "$\\max_d E - E$). `context` takes the fused path `_sdpa` (given) when "
                "`uses_sdpa(x)` says so. `forward` returns $X + \\gamma \\cdot$ `context`, in the "
                "input's dtype; for a float16 or bfloat16 input or under autocast it computes the "
                "context in float32 with autocast switched off (`_half_or_autocast` and "
                "`_at_least_float32` are given). The constructors are given: keep the attribute "
                "names, the tests copy weights into them. Public test: the output shapes (1 point). "
                "Hidden tests: on `PositionAttention(8)` and `ChannelAttention(8)` in both variants, "
                "the chapter's derivation checks that apply to each, six per module (2 points "
                "each), and equality of each module with the reference under copied weights "
                "(2 points each)."),
            "args": "PositionAttention, ChannelAttention",
            "tests": [
                ("shape", 1, False,
                 "G.run('output shapes', 'PositionAttention(8) and ChannelAttention(8) map (2, 8, 5, 7) to "
                 "(2, 8, 5, 7)', lambda: [G.assert_shape(cls(8), (2, 8, 5, 7)) for cls in "
                 "(PositionAttention, ChannelAttention)])"),
                *[(f"pam_{name[len('check_danet_'):]}", 2, True,
                   f"G.run_check({name!r}, lambda variant: PositionAttention(8, variant=variant))")
                  for name in PAM_CHECKS],
                *[(f"cam_{name[len('check_danet_'):]}", 2, True,
                   f"G.run_check({name!r}, lambda variant: ChannelAttention(8, variant=variant))")
                  for name in CAM_CHECKS],
                ("pam_reference", 2, True,
                 "G.compare_with_reference('PositionAttention', PositionAttention, dict(channels=8), (2, 5, 7))"),
                ("cam_reference", 2, True,
                 "G.compare_with_reference('ChannelAttention', ChannelAttention, dict(channels=8), (2, 5, 7))"),
            ],
        },
        {
            "name": "transposed",
            "label": "danet-ex-transposed",
            "stub": ["TransposedPAM", "rejected_by"],
            "args": "TransposedPAM, rejected_by",
            "tests": [
                ("transposed_aggregate", 2, True, "G.check_transposed(TransposedPAM)"),
                # V S changes the output (formula) and the explicit path no longer equals the fused
                # one (sdpa); S itself, alpha = 0 and the dtypes are untouched
                ("rejected_by", 1, True,
                 "G.run('rejected_by', 'the checks that reject V S in place of V S^T', "
                 "lambda: G.assert_equal(rejected_by, {'check_danet_matches_formula', "
                 "'check_danet_sdpa_matches_explicit'}))"),
            ],
        },
        {
            "name": "width",
            "label": "danet-ex-width",
            "stub": ["nn_flops", "extra_params"],
            "args": "extra_params, nn_flops",
            "tests": [
                # the query and key convolutions: C C' weights and C' biases each, C' = 64 or 64 // 8
                ("extra_params", 1, True,
                 "G.run('extra_params', 'query and key convolutions of width C = 64 against C // 8 = 8', "
                 "lambda: G.assert_equal(extra_params, 2 * (64 * 64 + 64) - 2 * (64 * 8 + 8)))"),
                # energies Q^T K: 2 N^2 C'; V S^T: 2 N^2 C; N = 32 * 32
                ("nn_flops", 1, True,
                 "G.run('nn_flops', 'the N x N products cost 2 N^2 (C\\' + C), N = 1024', lambda: "
                 "G.assert_equal(nn_flops, {v: 2 * 1024**2 * (c + 64) for v, c in "
                 "(('paper', 64), ('official', 8))}))"),
            ],
        },
        {
            "name": "scaled",
            "label": "danet-ex-scaled",
            "stub": ["scaled_position_attention"],
            "args": "scaled_position_attention",
            "tests": [("scaled", 2, True, "G.check_scaled(scaled_position_attention)")],
        },
        {
            "name": "check_mean",
            "label": "danet-ex-check-mean",
            "stub": ["check_context_is_a_mean_of_values"],
            "args": "check_context_is_a_mean_of_values",
            "tests": [
                ("accepts_position_attention", 1, True,
                 "G.expect_accepts(check_context_is_a_mean_of_values, 'PositionAttention')"),
                ("rejects_transposed_value_product", 1, True,
                 "G.expect_rejects(check_context_is_a_mean_of_values, 'pam-transposed-value-product')"),
                ("rejects_softmax_over_queries", 1, True,
                 "G.expect_rejects(check_context_is_a_mean_of_values, 'pam-softmax-over-queries')"),
            ],
        },
    ],
}

# Grading code of this chapter's own questions, appended to the generated _grading.py (which
# defines run, reference, checks, mutants, _randomise, _reference_global, rebased, ...).
HELPERS = '''
import math


def build(cls, variant):
    """A block as tests/test_derivation_danet.py builds it: C = 8 (the channel module takes no
    reduction)."""
    return cls(8, variant=variant)


def build_mutant(name, variant):
    """MUTANTS[name] = (cls, kwargs, checks): cls(8, **kwargs), in `variant` unless kwargs fix
    it."""
    cls, kwargs = mutants().MUTANTS[name][:2]
    return cls(8, **{"variant": variant, **kwargs})


def _projections(block, x):
    """Q, K, V of one reference block as (B, channels, N) matrices, from its convolution weights."""
    xf = x.flatten(2)
    out = []
    for conv in (block.query, block.key, block.value):
        w, b = conv.weight[:, :, 0, 0], conv.bias
        out.append(torch.einsum("dc,bcn->bdn", w, xf) + b[None, :, None])
    return out


def check_transposed(student_cls):
    def compare():
        ref = reference()
        mine = rebased(student_cls, ref.PositionAttention, ["aggregate"])
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(5)
            block = mine(8, variant=variant, implementation="explicit").double().eval()
            _randomise(block, g)
            x = torch.randn(2, 8, 5, 7, generator=g, dtype=torch.float64)
            with torch.no_grad():
                q, k, v = _projections(block, x)
                s = torch.softmax(q.transpose(1, 2) @ k, dim=-1)         # s_ij, rows sum to one
                torch.testing.assert_close(block.aggregate(s, v), v @ s, rtol=1e-10, atol=1e-12)
                want = x + block.gamma * (v @ s).reshape(x.shape)                # X + alpha V S
                torch.testing.assert_close(block(x), want, rtol=1e-10, atol=1e-12)
    run("TransposedPAM", "aggregate(s, v) = V S, (V S)_ci = sum_j v_cj s_ji, in the explicit path",
        compare)


def check_scaled(fn):
    def compare():
        ref = reference()
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(6)
            block = ref.PositionAttention(8, variant=variant).double().eval()
            _randomise(block, g)
            x = torch.randn(2, 8, 5, 7, generator=g, dtype=torch.float64)
            with torch.no_grad():
                q, k, v = _projections(block, x)
                s = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(8), dim=-1)
                want = x + block.gamma * (v @ s.transpose(1, 2)).reshape(x.shape)
                got = fn(block, x)
            assert torch.is_tensor(got), f"the result is a {type(got).__name__}, not a tensor"
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    run("scaled_position_attention", "X + alpha V softmax_j(Q^T K / sqrt(C))^T with the module's weights",
        compare)
'''

# Broken submissions (tests/test_assignments.py): the solutions notebook with `old` replaced by
# `new` in one code cell loses exactly the points of the tests in `caught` (question.test).
BROKEN = {
    # V S instead of V S^T, the classic porting bug, in the explicit path: the formula check and
    # the reference see it, and so does the SDPA check (the given fused path computes V S^T). The
    # rows of S still sum to one; the exercises are graded apart from the module (TransposedPAM
    # overrides aggregate itself, the FLOP count does not change).
    "pam-v-s": ("return torch.bmm(v, s.transpose(1, 2))", "return torch.bmm(v, s)",
                {"danet_modules.pam_matches_formula", "danet_modules.pam_sdpa_matches_explicit",
                 "danet_modules.pam_reference"}),
    # Queries and keys swapped in the energy, e_ij = k_i . q_j: W_q and W_k differ, so the formula,
    # the fused path and the reference disagree with it, but each row of S is still a softmax and
    # sums to one, so the row-sum check accepts it.
    "pam-queries-keys-swapped": ("energy = torch.bmm(q.transpose(1, 2), k)",
                                 "energy = torch.bmm(k.transpose(1, 2), q)",
                                 {"danet_modules.pam_matches_formula",
                                  "danet_modules.pam_sdpa_matches_explicit", "danet_modules.pam_reference"}),
    # The usual stability shift E - max E in place of the official max E - E: a softmax ignores it,
    # so the official variant becomes the paper's softmax(E). The formula, the energy-sign check
    # and the reference see it (official variant); nothing else involves the sign.
    "cam-usual-shift": ("energy = energy.amax(dim=-1, keepdim=True) - energy",
                        "energy = energy - energy.amax(dim=-1, keepdim=True)",
                        {"danet_modules.cam_matches_formula",
                         "danet_modules.cam_channel_energy_sign", "danet_modules.cam_reference"}),
}
