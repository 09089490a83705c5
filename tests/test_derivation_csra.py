"""The CSRA chapter's derivation checks accept CSRA and reject deliberately broken versions of it."""

import math
import types

import pytest
import torch

from attn_lib.checks.csra import (
    check_csra_is_class_specific,
    check_csra_matches_formula,
    check_csra_temperature_limits,
)
from attn_lib.csra import CSRA

CHECKS = [check_csra_matches_formula, check_csra_temperature_limits, check_csra_is_class_specific]


def build(cls=CSRA, variant="paper"):
    """Four heads (temperatures 1, 2, 4 and max pooling): every kind of head takes part."""
    return cls(12, 5, num_heads=4, variant=variant)


def on_every_head(forward):
    """A breakage that replaces the forward of every head (a bound method: deepcopy rebinds it)."""
    def breakage(m):
        for head in m.multi_head:
            head.forward = types.MethodType(forward, head)
    return breakage


def _attention(head, ell):
    if head.max_pool:
        return ell.amax(2)
    return (ell * torch.softmax(ell * head.temperature, dim=2)).sum(2)


def softmax_over_classes(self, x):
    """Eq. (1)'s softmax over the classes (dim 1) instead of the positions."""
    ell = self.scores(x)
    if self.max_pool:
        return ell.mean(2) + self.lam * ell.amax(2)
    return ell.mean(2) + self.lam * (ell * torch.softmax(ell * self.temperature, dim=1)).sum(2)


def no_temperature(self, x):
    """The softmax ignores T (it runs at T = 1)."""
    ell = self.scores(x)
    if self.max_pool:
        return ell.mean(2) + self.lam * ell.amax(2)
    return ell.mean(2) + self.lam * (ell * torch.softmax(ell, dim=2)).sum(2)


def max_and_mean_swapped(self, x):
    """The base is the max of the scores and the attention term their mean."""
    ell = self.scores(x)
    return ell.amax(2) + self.lam * ell.mean(2)


def lambda_on_the_base(self, x):
    """lambda weighs the base instead of the attention term: lam * base + attention."""
    ell = self.scores(x)
    return self.lam * ell.mean(2) + _attention(self, ell)


def weights_not_divided(self, x):
    """The official variant without the division by ||m_i|| (the flag says it divides)."""
    m = self.head.weight.flatten(1)
    ell = torch.matmul(m, x.flatten(2))
    return ell.mean(2) + self.lam * _attention(self, ell)


def softmax_at_99(m):
    """The official T = 99 head as a softmax at temperature 99, not max pooling."""
    for head in m.multi_head:
        if head.temperature == 99:
            head.max_pool = False


def attention_on_features_without_lambda(self, x):
    """The attention term added without lambda (f = g + a)."""
    ell = self.scores(x)
    return ell.mean(2) + _attention(self, ell)


def first_head_only(m):
    """The heads' logits are not summed: only the first head counts (eq. (6) dropped)."""
    def forward(self, x):
        return self.multi_head[0](x)
    m.forward = types.MethodType(forward, m)


MUTANTS = {
    "softmax-over-classes": (CSRA, on_every_head(softmax_over_classes), CHECKS),
    "no-temperature": (CSRA, on_every_head(no_temperature),
                       [check_csra_matches_formula, check_csra_temperature_limits]),
    "max-mean-swapped": (CSRA, on_every_head(max_and_mean_swapped),
                         [check_csra_matches_formula, check_csra_temperature_limits]),
    "lambda-on-base": (CSRA, on_every_head(lambda_on_the_base),
                       [check_csra_matches_formula, check_csra_temperature_limits]),
    "no-lambda": (CSRA, on_every_head(attention_on_features_without_lambda),
                  [check_csra_matches_formula, check_csra_temperature_limits]),
    "first-head-only": (CSRA, first_head_only,
                        [check_csra_matches_formula, check_csra_temperature_limits]),
}
# Mutants of the official variant only (the paper variant has nothing to break there).
OFFICIAL_MUTANTS = {
    "no-normalisation": (CSRA, on_every_head(weights_not_divided), [check_csra_matches_formula]),
    "softmax-at-99": (CSRA, softmax_at_99, [check_csra_matches_formula]),
}


@pytest.mark.parametrize("variant", CSRA.VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("num_heads", [1, 2, 4, 8])
def test_checks_accept_csra(variant, check, num_heads):
    check(CSRA(12, 5, num_heads=num_heads, variant=variant))


def _assert_rejected(cls, breakage, checks, variant):
    broken = build(cls, variant)
    breakage(broken)
    with torch.no_grad():
        y = broken(torch.randn(2, 12, 5, 7))      # the mutant runs: it fails the checks, not Python
    assert y.shape == (2, 5)
    for check in checks:
        with pytest.raises(AssertionError):
            check(broken)


@pytest.mark.parametrize("variant", CSRA.VARIANTS)
@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_csra(mutant, variant):
    _assert_rejected(*MUTANTS[mutant], variant)


@pytest.mark.parametrize("mutant", list(OFFICIAL_MUTANTS), ids=str)
def test_checks_reject_broken_official_csra(mutant):
    _assert_rejected(*OFFICIAL_MUTANTS[mutant], "official")


def test_the_official_mutants_are_the_paper_variant():
    """What the official mutants break is what variant="paper" computes on purpose: the paper
    variant's heads do not divide, and its T = 99 (given explicitly) is a softmax."""
    paper = CSRA(12, 5, temperatures=(1.0, 2.0, 4.0, 99.0), num_heads=4)
    assert not any(h.normalize or h.max_pool for h in paper.multi_head)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_heads": 3}, "official settings"),
    ({"temperatures": (1.0, 0.0)}, "one value per head"),
    ({"num_heads": 2, "temperatures": (1.0, 0.0)}, "> 0"),
    ({"temperatures": (-1.0,)}, "> 0"),
    ({"temperatures": (float("nan"),)}, "> 0"),
    ({"temperatures": (float("inf"),), "variant": "official"}, "T = 99"),
    ({"lam": -0.1}, "lam"),
    ({"lam": float("inf")}, "lam"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_heads": 0}, "num_heads"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CSRA(12, **kwargs)


# The official head's temperatures, copied from MHA.temp_settings in pipeline/csra.py of
# Kevinz-code/CSRA at c8480d12742459809179eb0fc4ee0a88b6b98bfa (99 is its max pooling). The
# checks above read the module's own `temperatures`, so a wrong default table would pass them.
OFFICIAL_TEMP_SETTINGS = {1: [1], 2: [1, 99], 4: [1, 2, 4, 99], 6: [1, 2, 3, 4, 5, 99],
                          8: [1, 2, 3, 4, 5, 6, 7, 99]}


@pytest.mark.parametrize("num_heads", sorted(OFFICIAL_TEMP_SETTINGS))
def test_default_temperatures_are_the_official_settings(num_heads):
    official = CSRA(8, 5, num_heads=num_heads, variant="official")
    paper = CSRA(8, 5, num_heads=num_heads)
    want = OFFICIAL_TEMP_SETTINGS[num_heads]
    assert list(official.temperatures) == want
    assert [h.temperature for h in official.multi_head] == want
    # the paper variant writes the official 99 as T = infinity: max pooling
    assert list(paper.temperatures) == [math.inf if t == 99 else t for t in want]
    assert [h.max_pool for h in paper.multi_head] == [t == 99 for t in want]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_large_temperature_does_not_overflow_in_half_precision(dtype):
    torch.manual_seed(0)
    m = CSRA(8, 5, temperatures=(1000.0,)).to(dtype)
    x = 100 * torch.randn(2, 8, 5, 6)
    y = m(x.to(dtype))
    assert torch.isfinite(y).all()
    reference = CSRA(8, 5, temperatures=(1000.0,))
    reference.load_state_dict(m.float().state_dict())
    torch.testing.assert_close(y.float(), reference(x.to(dtype).float()), rtol=2e-2, atol=2.0)
