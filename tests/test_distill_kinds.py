"""Other kinds of distillation (issue 14): hidden-layer terms, teacher init, mutual learning,
born-again generations and quantisation-aware training, on tiny hand-checked or synthetic cases."""
import json
import math

import pytest
import torch

from asr_kd.distill.born_again import born_again
from asr_kd.distill.distill import distill
from asr_kd.distill.hidden_targets import HiddenConfig
from asr_kd.distill.losses import Hidden, LossConfig, Targets, distill_loss, hidden_cos, hint, soft_kl, sp
from asr_kd.distill.mutual import mutual_loss_fn, train_mutual
from asr_kd.distill.teachers import OnlineTeacher
from asr_kd.errors import AsrKdError
from asr_kd.nnet.frames import FrameBatch
from asr_kd.nnet.infer import evaluate
from asr_kd.nnet.hidden import HiddenCapture, hidden_modules, init_from_teacher, linear_layers
from asr_kd.nnet.models import ModelConfig, load_model
from asr_kd.nnet.quant import fake_quant_activation, fake_quant_weight, fake_quantize_linears, int8_dynamic
from asr_kd.nnet.train import ModelSpec, init_model, save_final, train_frame_classifier
from test_distill_api import DIM, NUM_PDFS, student_cfg, synthetic, teacher_dirs


def targets(student, teacher, projected=None):
    return Targets(labels=torch.zeros(len(student), dtype=torch.long), hidden=Hidden(student, teacher, projected))


# ------------------------------------------------------------------ loss terms, by hand
def test_hint_value_and_gradient():
    proj = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 2.0], [3.0, 1.0]])
    loss = hint(torch.zeros(2, 3), targets(torch.zeros(2, 5), teacher, proj), 1.0)
    loss.backward()
    assert loss.item() == pytest.approx((1 + 0 + 0 + 9) / 4)  # mean of squared differences
    torch.testing.assert_close(proj.grad, torch.tensor([[0.5, 0.0], [0.0, 1.5]]))  # 2 (p - t) / 4


def test_hidden_cos_value_and_gradient():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    h = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    loss = hidden_cos(torch.zeros(2, 3), targets(s, h), 1.0)
    loss.backward()
    assert loss.item() == pytest.approx((1 - 0 + 1 - 1) / 2)
    # d(1 - cos)/ds = -(h/(|s||h|) - cos s/|s|^2); row 0: -(0, 1) / 2 frames; row 1 (parallel): 0
    torch.testing.assert_close(s.grad, torch.tensor([[0.0, -0.5], [0.0, 0.0]]))
    with pytest.raises(AsrKdError, match="equal width"):
        hidden_cos(torch.zeros(2, 3), targets(s, torch.ones(2, 3)), 1.0)


def test_sp_value_and_gradient():
    s = torch.eye(2, requires_grad=True)  # G_s = I (rows already unit)
    h = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # G_h = ones -> rows (1, 1)/sqrt 2
    loss = sp(torch.zeros(2, 3), targets(s, h), 1.0)
    assert loss.item() == pytest.approx((4 - 2 * math.sqrt(2)) / 4)  # 1/B^2 ||G_s - G_h||_F^2
    loss.backward()
    # by hand: dL/dG~ = 2 D / B^2 with D = G~_s - G~_h; the row normalisation passes (I - g~_i g~_i^T) / |G_i|
    # of row i, which at S = I (g~_i = e_i, |G_i| = 1) drops the diagonal; G = S S^T gives
    # dL/dS = (D' + D'^T) S, D' the off-diagonal part of 2 D / B^2, and S = I
    d = torch.eye(2) - torch.full((2, 2), 1 / math.sqrt(2))
    d_proj = d - torch.diag(torch.diag(d))
    expected = 2 * (d_proj + d_proj.T) / 4
    torch.testing.assert_close(s.grad, expected)
    double = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: sp(torch.zeros(5, 2), targets(a, teacher), 1.0), (double,))


def test_hidden_terms_need_hidden_targets_and_are_registered():
    with pytest.raises(AsrKdError, match="hidden.teacher"):
        hint(torch.zeros(2, 3), Targets(labels=torch.zeros(2)), 1.0)
    cfg = LossConfig(terms={"soft_ce": 1.0, "hint": 0.5, "hard_ce": 0.5})
    assert cfg.needs_hidden and cfg.needs_teacher and not LossConfig().needs_hidden
    z = torch.randn(2, 3)
    tgt = Targets(labels=torch.tensor([0, 2]), logits=torch.randn(2, 3),
                  hidden=Hidden(torch.randn(2, 4), torch.randn(2, 2), torch.randn(2, 2)))
    total, metrics = distill_loss(z, tgt, cfg)
    assert total.item() == pytest.approx(sum(w * metrics[f"loss_{n}"].item() for n, w in cfg.terms.items()))


# ------------------------------------------------------------------ hidden layers and teacher init
def spec_of(layers, dim=16, context=1):
    return ModelSpec(ModelConfig(hidden_layers=layers, hidden_dim=dim), DIM, context, context, NUM_PDFS, True)


def test_hidden_capture_reads_each_relu_output():
    model = init_model(spec_of(3), 1, (torch.zeros(DIM), torch.ones(DIM)))
    assert len(hidden_modules(model)) == 3
    capture = HiddenCapture(model, 1)
    x = torch.randn(4, 3 * DIM)
    model(x)
    net = model.net
    expected = net[3](net[2](net[1](net[0](model.norm(x)))))
    torch.testing.assert_close(capture.take(), expected)
    with pytest.raises(AsrKdError, match="hidden layer 3 does not exist"):
        HiddenCapture(model, 3)


def test_init_from_teacher_copies_the_chosen_layers():
    teacher = init_model(spec_of(3), 1, (torch.randn(DIM), torch.rand(DIM) + 0.5))
    student = init_model(spec_of(2), 2, (torch.zeros(DIM), torch.ones(DIM)))
    init_from_teacher(student, teacher, [0, 2])
    s, t = linear_layers(student), linear_layers(teacher)
    for a, b in ((s[0], t[0]), (s[1], t[2]), (s[2], t[3])):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert torch.equal(student.norm.mean, teacher.norm.mean)
    with pytest.raises(AsrKdError, match="same width"):
        init_from_teacher(student, teacher, [1, 2])  # teacher layer 1 reads 16 values, the student's input 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    dirs = teacher_dirs(root)
    teacher = OnlineTeacher.load(dirs, "arith")
    train, dev = synthetic(30, 0, teacher), synthetic(8, 1, teacher)
    deep_spec = ModelSpec(ModelConfig(hidden_layers=3, hidden_dim=32), DIM, 1, 1, NUM_PDFS, True)
    deep = init_model(deep_spec, 5, train.feature_stats())
    save_final(root / "deep" / "final.pt", deep.state_dict(), deep_spec)
    return root, dirs, train, dev


def cfg(**kw):
    """test_distill_api's student, two hidden layers deep, two epochs."""
    return student_cfg(**{"model": ModelConfig(hidden_layers=2, hidden_dim=32), "max_epochs": 2, **kw})


def test_teacher_initialised_student_equals_teacher_layers_at_step_0(setup):
    root, dirs, train, dev = setup
    hidden = HiddenConfig(teacher=str(root / "deep"), init_layers=[0, 2])
    loss = LossConfig(terms={"soft_ce": 1.0, "hidden_cos": 1.0}, temperature=2.0)
    # lr 1e-30 (lr must be > 0): the weights stay where initialisation put them, to far below float32
    # resolution (the loss still runs end to end)
    result = distill(cfg(optimizer="sgd", lr=1e-30, max_epochs=1), OnlineTeacher.load(dirs), train, loss, dev=dev,
                     exp_dir=root / "distilbert", hidden=hidden)
    teacher, _ = load_model(root / "deep")
    s, t = linear_layers(result.model), linear_layers(teacher)
    for a, b in ((s[0], t[0]), (s[1], t[2]), (s[2], t[3])):
        assert torch.allclose(a.weight, b.weight, rtol=0, atol=1e-20)
        assert torch.allclose(a.bias, b.bias, rtol=0, atol=1e-20)
    metrics = json.loads((root / "distilbert" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < metrics["train_loss_hidden_cos"] < 2
    assert json.loads((root / "distilbert" / "distill.json").read_text())["hidden"]["init_layers"] == [0, 2]


def test_hint_projection_trains_with_the_student_but_final_pt_holds_the_student(setup):
    root, dirs, train, dev = setup
    hidden = HiddenConfig(teacher=str(root / "deep"), student_layer=0, teacher_layer=1)
    loss = LossConfig(terms={"soft_ce": 1.0, "hint": 1.0, "hard_ce": 0.5}, temperature=2.0)
    result = distill(cfg(), OnlineTeacher.load(dirs), train, loss, dev=dev, exp_dir=root / "hint", hidden=hidden)
    blob = torch.load(root / "hint" / "final.pt", weights_only=True)
    assert set(blob["state_dict"]) == set(init_model(result.spec, 0, train.feature_stats()).state_dict())
    ckpt = torch.load(sorted((root / "hint" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    assert ckpt["model"]["aux.weight"].shape == (32, 32)  # the projection (student 32 -> teacher 32) is checkpointed
    hints = [json.loads(ln)["train_loss_hint"] for ln in (root / "hint" / "metrics.jsonl").read_text().splitlines()]
    assert hints[-1] < hints[0]
    with pytest.raises(AsrKdError, match="set hidden.teacher"):
        distill(cfg(), OnlineTeacher.load(dirs), train, loss, dev=dev, exp_dir=root / "hint_missing")


# ------------------------------------------------------------------ mutual learning
def test_mutual_learning_with_one_peer_equals_plain_training(setup):
    root, _, train, dev = setup
    plain = train_frame_classifier(cfg(), train, dev, exp_dir=root / "plain")
    (peer,) = train_mutual(cfg(), 1, train, dev, root / "mutual1")
    a = torch.load(root / "plain" / "checkpoints" / "epoch_2.pt", weights_only=False)["model"]
    b = torch.load(root / "mutual1" / "group" / "checkpoints" / "epoch_2.pt", weights_only=False)["model"]
    assert plain.last_epoch == 2 and a.keys() == b.keys()
    for name in a:  # after the last epoch, not only at the best one
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    final = torch.load(peer / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], v) for k, v in
               torch.load(root / "plain" / "final.pt", weights_only=True)["state_dict"].items())


def test_mutual_loss_is_hard_ce_plus_kl_to_the_other_peers_average():
    logits = torch.randn(3, 4, 5, requires_grad=True)
    y = torch.tensor([[0, 1, 2, 3]] * 3)
    batch = FrameBatch(torch.zeros(3, 4, 1), y, torch.arange(12).view(3, 4), torch.zeros(3, 4, dtype=torch.long))
    loss_cfg = LossConfig(terms={"hard_ce": 1.0, "soft_kl": 1.0}, temperature=1.0)
    loss, metrics = mutual_loss_fn(loss_cfg, 3)(logits, batch)
    p = torch.softmax(logits.detach(), -1)
    expected = 0.0
    for k in range(3):
        others = (p.sum(0) - p[k]) / 2
        ce = torch.nn.functional.cross_entropy(logits[k], y[k])
        kl = (others * (others.log() - torch.log_softmax(logits[k], -1))).sum(-1).mean()
        expected = expected + ce + kl
    torch.testing.assert_close(loss, expected)
    assert metrics["loss_soft_kl"].shape == (3,)
    loss.backward()  # targets are held fixed: peer k's gradient is that of its own loss only
    own = torch.nn.functional.cross_entropy(logits[0], y[0]) + soft_kl(
        logits[0], Targets(labels=y[0], probs=(p[1] + p[2]) / 2), 1.0)
    g = torch.autograd.grad(own, logits)[0]
    torch.testing.assert_close(logits.grad[0], g[0])


def test_mutual_peers_learn_together(setup):
    root, _, train, dev = setup
    peers = train_mutual(cfg(), 2, train, dev, root / "mutual2")
    record = json.loads((root / "mutual2" / "mutual.json").read_text())
    assert [p.name for p in peers] == record["peers"] == ["peer_0", "peer_1"] and len(record["dev_frame_acc"]) == 2
    a, b = (load_model(p)[0] for p in peers)
    assert not torch.equal(linear_layers(a)[0].weight, linear_layers(b)[0].weight)  # own seeds


# ------------------------------------------------------------------ born-again
def test_born_again_generation_1_equals_distillation(setup):
    root, dirs, train, dev = setup
    loss = LossConfig(terms={"soft_ce": 1.0, "hard_ce": 0.5}, temperature=2.0)
    direct = distill(cfg(), OnlineTeacher.load(dirs), train, loss, dev=dev, exp_dir=root / "direct")
    gens = born_again(cfg(), OnlineTeacher.load(dirs), train, loss, dev=dev, exp_root=root / "ban", generations=2)
    a = torch.load(direct.exp_dir / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(gens[0].exp_dir / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    gen2 = json.loads((root / "ban" / "gen_2" / "distill.json").read_text())
    assert gen2["teacher"]["online"] == [str(root / "ban" / "gen_1" / "final.pt")]
    record = json.loads((root / "ban" / "born_again.json").read_text())
    assert [g["generation"] for g in record["generations"]] == [1, 2]


# ------------------------------------------------------------------ quantisation-aware
def test_fake_quantisation_rounds_to_the_int8_grid_with_a_straight_through_gradient():
    w = torch.tensor([0.5, -1.27, 0.013, 0.9], requires_grad=True)
    q = fake_quant_weight(w)
    steps = q / (1.27 / 127)
    torch.testing.assert_close(steps, steps.round())
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones(4))  # straight-through: no rounding in the gradient
    x = torch.tensor([[-1.0, 0.0, 3.0]])
    torch.testing.assert_close(fake_quant_activation(x), x, atol=4 / 127, rtol=0)


def test_quantisation_aware_student_saves_a_plain_model_that_int8_scores_close(setup):
    root, dirs, train, dev = setup
    loss = LossConfig(terms={"soft_ce": 1.0, "hard_ce": 0.5}, temperature=2.0)
    result = distill(cfg(), OnlineTeacher.load(dirs), train, loss, dev=dev, exp_dir=root / "qat", fake_int8=True)
    model, _ = load_model(root / "qat")
    assert not any(type(m).__name__ == "FakeQuantLinear" for m in model.modules())
    x = dev.windows(torch.arange(dev.num_frames), 1, 1)
    with torch.no_grad():
        simulated = fake_quantize_linears(load_model(root / "qat")[0])(x)
        real = int8_dynamic(model)(x)
    assert (simulated - real).abs().max() < 0.1 * real.abs().max()
    assert json.loads((root / "qat" / "distill.json").read_text())["fake_int8"] is True
    # an int8 model (no parameters left) scores through the Ensemble path, as eval-frames --int8 does
    acc_fp32 = evaluate((model, result.spec), dev)["frame_acc"]
    acc_int8 = evaluate((int8_dynamic(model), result.spec), dev)["frame_acc"]
    assert abs(acc_int8 - acc_fp32) <= 0.05
    assert result.train.best_epoch >= 1
