"""The norm layers: numerics against their formulas, per-token statistics, the factory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alphasearch.errors import ConfigError
from alphasearch.nn import NORM_NAMES, Derf, DyT, LayerNorm, RMSNorm, _DyTFunction, make_norm


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Give per-channel weights/biases non-trivial values so the formulas are really exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in ("weight", "bias"):
                p.copy_(torch.randn(p.shape, generator=gen))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1)) * 2.0


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_dyt_matches_formula_values_and_gradients(x: torch.Tensor, bias: bool) -> None:
    dyt = DyT(16, alpha0=0.7, bias=bias)
    _randomise(dyt)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    alpha = dyt.alpha.detach().clone().requires_grad_(True)
    weight = dyt.weight.detach().clone().requires_grad_(True)
    expected = weight * torch.tanh(alpha * xb)
    if bias:
        expected = expected + dyt.bias.detach()
    got = dyt(xa)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    grad = torch.randn_like(got)
    got.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dyt.alpha.grad, alpha.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dyt.weight.grad, weight.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_derf_matches_formula(x: torch.Tensor, bias: bool) -> None:
    derf = Derf(16, alpha0=0.3, shift0=0.25, bias=bias)
    _randomise(derf)
    expected = derf.weight * torch.erf(0.3 * x + 0.25)
    if bias:
        expected = expected + derf.bias
    torch.testing.assert_close(derf(x), expected)


@pytest.mark.parametrize("cls", [DyT, Derf], ids=["dyt", "derf"])
def test_alpha_is_one_learnable_scalar_and_bias_is_optional(cls: type) -> None:
    norm = cls(16, alpha0=0.4)
    assert norm.alpha.shape == ()
    assert norm.alpha.requires_grad
    assert norm.alpha.item() == pytest.approx(0.4)
    assert norm.weight.shape == (16,)
    assert torch.equal(norm.weight, torch.ones(16))
    assert norm.bias is None
    assert "bias" not in dict(norm.named_parameters())
    with_bias = cls(16, bias=True)
    assert torch.equal(with_bias.bias, torch.zeros(16))
    assert [n for n, _ in norm.named_parameters() if n.endswith("alpha")] == ["alpha"]


def test_derf_shift_is_a_learnable_scalar() -> None:
    derf = Derf(8, shift0=0.1)
    assert derf.shift.shape == () and derf.shift.requires_grad
    assert derf.shift.item() == pytest.approx(0.1)


def test_rmsnorm_matches_formula(x: torch.Tensor) -> None:
    norm = RMSNorm(16)
    _randomise(norm)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_layernorm_matches_torch_layer_norm(x: torch.Tensor) -> None:
    norm = LayerNorm(16)
    _randomise(norm)
    expected = F.layer_norm(x, (16,), norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(norm(x), expected)


@pytest.mark.parametrize("name", ["rmsnorm", "layernorm"])
def test_normalising_families_use_per_token_statistics(x: torch.Tensor, name: str) -> None:
    """Changing one token (or another batch row) must not change any other token's output."""
    norm = make_norm(name, 16)
    before = norm(x)
    changed = x.clone()
    changed[0, 2] = torch.randn(16, generator=torch.Generator().manual_seed(9)) * 5  # one token
    changed[1] = changed[1] * -3  # a whole other sequence
    after = norm(changed)
    untouched = torch.ones(3, 5, dtype=torch.bool)
    untouched[0, 2] = False
    untouched[1] = False
    torch.testing.assert_close(after[untouched], before[untouched])
    assert not torch.allclose(after[0, 2], before[0, 2])
    # each token comes out normalised over its own features
    if name == "layernorm":
        torch.testing.assert_close(after.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(after.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("dyt", DyT), ("derf", Derf), ("rmsnorm", RMSNorm), ("layernorm", LayerNorm)],
    ids=NORM_NAMES,
)
def test_make_norm_builds_each_family(name: str, cls: type) -> None:
    norm = make_norm(name, 12, alpha0=0.2, bias=True, shift0=0.5)
    assert isinstance(norm, cls)
    assert norm(torch.randn(2, 3, 12)).shape == (2, 3, 12)
    if name in ("dyt", "derf"):
        assert norm.alpha.item() == pytest.approx(0.2)
        assert norm.bias is not None
    if name == "derf":
        assert norm.shift.item() == pytest.approx(0.5)
    if name == "rmsnorm":
        assert not hasattr(norm, "alpha") and "bias" not in dict(norm.named_parameters())


def test_make_norm_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown norm 'batchnorm'; use one of dyt, derf") as info:
        make_norm("batchnorm", 8)
    assert info.value.field == "norm"


def _dyt_autograd(x: torch.Tensor, dyt: DyT) -> torch.Tensor:
    """DyT's expression through plain autograd (what DyT.forward was before its hand-written backward)."""
    s = torch.sigmoid(x * (2.0 * dyt.alpha))
    y = torch.addcmul(-dyt.weight, s, 2.0 * dyt.weight)
    return y if dyt.bias is None else y + dyt.bias


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("out_dtype", [None, torch.bfloat16], ids=["fp32-out", "bf16-out"])
def test_dyt_hand_written_backward_matches_autograd(
    x: torch.Tensor, bias: bool, out_dtype: torch.dtype | None
) -> None:
    """Values and dL/dx bit for bit, dL/dw and dL/dalpha to float rounding (summed in another order); a bf16
    `out_dtype` equals rounding the fp32 output (what autocast's cast before a Linear did), and its bf16
    incoming gradient is widened exactly."""
    new, ref = DyT(16, alpha0=0.7, bias=bias), DyT(16, alpha0=0.7, bias=bias)
    _randomise(new)
    ref.load_state_dict(new.state_dict())
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    got = new(xa, out_dtype=out_dtype)
    expected = _dyt_autograd(xb, ref)
    if out_dtype is not None:
        expected = expected.to(out_dtype)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)
    grad = torch.randn(got.shape, generator=torch.Generator().manual_seed(2)).to(got.dtype)
    got.backward(grad)
    expected.backward(grad)
    assert torch.equal(xa.grad, xb.grad)
    ref_params = dict(ref.named_parameters())
    for name, p in new.named_parameters():
        if name == "bias":
            assert torch.equal(p.grad, ref_params[name].grad)
        else:
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-5, atol=1e-6, msg=name)


def test_dyt_gradients_pass_gradcheck_in_float64() -> None:
    dyt = DyT(6, alpha0=0.8, bias=True).double()
    _randomise(dyt)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    inputs = (x, dyt.alpha, dyt.weight, dyt.bias)
    assert torch.autograd.gradcheck(lambda *args: _DyTFunction.apply(*args, None), inputs)


def test_dyt_frozen_parameters_get_no_gradient(x: torch.Tensor) -> None:
    dyt = DyT(16, alpha0=0.5)
    dyt.alpha.requires_grad_(False)
    xa = x.clone().requires_grad_(True)
    dyt(xa).sum().backward()
    assert dyt.alpha.grad is None and dyt.weight.grad is not None and xa.grad is not None


@pytest.mark.parametrize("name", NORM_NAMES)
def test_every_norm_takes_out_dtype_and_rounds_its_output_to_it(x: torch.Tensor, name: str) -> None:
    norm = make_norm(name, 16, alpha0=0.3, bias=True)
    got = norm(x, out_dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, norm(x).to(torch.bfloat16))
