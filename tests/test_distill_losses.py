"""Distillation loss terms against hand-computed values, and the scale properties the paper relies on."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr_kd.distill.losses import LossConfig, Targets, distill_loss, hard_ce, logit_mse, soft_ce, soft_kl
from asr_kd.errors import AsrKdError

Z = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]   # student logits, 2 frames x 3 classes
V = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]    # teacher logits


def np_softmax(x, t=1.0):
    e = np.exp(np.asarray(x) / t - np.max(np.asarray(x) / t, axis=-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def targets(labels=(0, 1)):
    return Targets(labels=torch.tensor(labels), logits=torch.tensor(V))


def test_soft_ce_and_kl_hand_values():
    t = 2.0
    p, q = np_softmax(V, t), np_softmax(Z, t)
    ce = t * t * np.mean(-(p * np.log(q)).sum(-1))  # sum over classes, mean over frames, times T^2
    kl = t * t * np.mean((p * (np.log(p) - np.log(q))).sum(-1))
    z = torch.tensor(Z)
    assert soft_ce(z, targets(), t).item() == pytest.approx(ce, rel=1e-6)
    assert soft_kl(z, targets(), t).item() == pytest.approx(kl, rel=1e-6)
    # frame 0 by hand at T=1: p = (e^2, 1, 1)/(e^2+2), log q = (1, 0, -1) - log(e + 1 + 1/e)
    lse = math.log(math.e + 1 + 1 / math.e)
    p0 = np.array([math.e**2, 1, 1]) / (math.e**2 + 2)
    by_hand = -(p0 * (np.array([1, 0, -1]) - lse)).sum()
    assert soft_ce(z[:1], Targets(labels=torch.tensor([0]), logits=torch.tensor(V[:1])), 1.0).item() == pytest.approx(by_hand, rel=1e-6)


def test_soft_kl_has_soft_ce_gradient():
    z1 = torch.tensor(Z, requires_grad=True)
    z2 = torch.tensor(Z, requires_grad=True)
    soft_ce(z1, targets(), 5.0).backward()
    soft_kl(z2, targets(), 5.0).backward()
    torch.testing.assert_close(z1.grad, z2.grad)
    assert soft_kl(torch.tensor(V), targets(), 5.0).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_ce_hand_value_and_ignores_unlabelled():
    z = torch.tensor(Z)
    expected = -math.log(np_softmax(Z)[0, 0])  # only frame 0 is labelled
    assert hard_ce(z, targets(labels=(0, -1)), 3.0).item() == pytest.approx(expected, rel=1e-6)  # T ignored
    both = np.mean([-math.log(np_softmax(Z)[0, 0]), -math.log(np_softmax(Z)[1, 1])])
    assert hard_ce(z, targets(), 1.0).item() == pytest.approx(both, rel=1e-6)
    zg = torch.tensor(Z, requires_grad=True)
    loss = hard_ce(zg, targets(labels=(-1, -1)), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(zg.grad == 0)


def test_logit_mse_hand_value():
    z0 = np.array(Z) - np.mean(Z, -1, keepdims=True)
    v0 = np.array(V) - np.mean(V, -1, keepdims=True)
    expected = np.mean(((z0 - v0) ** 2).sum(-1)) / (2 * 3)
    assert logit_mse(torch.tensor(Z), targets(), 1.0).item() == pytest.approx(expected, rel=1e-6)
    # shifting a frame's logits by a constant changes nothing (zero-mean logits)
    assert logit_mse(torch.tensor(Z) + 7.0, targets(), 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_soft_gradient_scale_constant_across_temperature():
    """T^2 keeps the soft gradient's magnitude about constant; without it, it would fall as 1/T."""
    g = torch.Generator().manual_seed(0)
    z, v = 0.1 * torch.randn(64, 50, generator=g), 0.1 * torch.randn(64, 50, generator=g)
    norms = []
    for t in (1.0, 2.0, 5.0, 10.0):
        zz = z.clone().requires_grad_(True)
        soft_ce(zz, Targets(labels=torch.zeros(64, dtype=torch.long), logits=v), t).backward()
        norms.append(zz.grad.norm().item())
    assert max(norms) / min(norms) < 1.05, norms


def test_high_temperature_limit_is_logit_matching():
    """T^2 * soft term -> logit_mse (value of soft_kl and gradient of both) as T -> inf."""
    g = torch.Generator().manual_seed(1)
    z, v = torch.randn(8, 20, generator=g, dtype=torch.float64), torch.randn(8, 20, generator=g, dtype=torch.float64)
    tgt = Targets(labels=torch.zeros(8, dtype=torch.long), logits=v)
    zm = z.clone().requires_grad_(True)
    mse = logit_mse(zm, tgt, 1.0)
    mse.backward()
    errors = []
    for t in (10.0, 100.0, 1000.0):
        zs = z.clone().requires_grad_(True)
        soft_ce(zs, tgt, t).backward()
        grad_err = (zs.grad - zm.grad).norm() / zm.grad.norm()
        value_err = abs(soft_kl(z, tgt, t).item() - mse.item()) / mse.item()
        errors.append((grad_err.item(), value_err))
    assert errors[-1][0] < 1e-3 and errors[-1][1] < 1e-3, errors
    assert errors[0][0] > errors[1][0] > errors[2][0]  # converges as T grows


def test_kl_div_mean_reduction_trap_differs_by_num_classes():
    """The common bug: kl_div(reduction='mean') averages over classes too, shrinking the term by C."""
    t = 2.0
    z = torch.tensor(Z)
    p = torch.softmax(torch.tensor(V) / t, -1)
    log_q = torch.log_softmax(z / t, -1)
    ours = soft_kl(z, targets(), t) / t**2
    batchmean = F.kl_div(log_q, p, reduction="batchmean")
    with pytest.warns(UserWarning):  # PyTorch itself warns about it
        trap = F.kl_div(log_q, p, reduction="mean")
    torch.testing.assert_close(ours, batchmean)
    assert (ours / trap).item() == pytest.approx(3.0, rel=1e-6)  # C = 3 classes


def test_weighted_sum_and_config_validation():
    cfg = LossConfig(terms={"soft_ce": 1.0, "hard_ce": 0.5}, temperature=2.0)
    z = torch.tensor(Z)
    total, metrics = distill_loss(z, targets(), cfg)
    expected = soft_ce(z, targets(), 2.0) + 0.5 * hard_ce(z, targets(), 2.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(metrics) == {"loss_soft_ce", "loss_hard_ce"}
    with pytest.raises(AsrKdError, match="unknown term.*'soft'"):
        LossConfig(terms={"soft": 1.0})
    with pytest.raises(AsrKdError, match="temperature"):
        LossConfig(temperature=0.0)
    no_logits = Targets(labels=torch.tensor([0, 1]), probs=torch.softmax(torch.tensor(V), -1))
    with pytest.raises(AsrKdError, match="logit_mse needs full teacher logits"):
        logit_mse(z, no_logits, 1.0)
