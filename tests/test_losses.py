"""DINO, iBOT and KoLeo losses against values computed by hand on tiny tensors; Sinkhorn-Knopp over 2 gloo ranks."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gapless.train.losses import DINOLoss, IBOTPatchLoss, KoLeoLoss, sinkhorn_knopp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def log_softmax_by_hand(values: list[float]) -> list[float]:
    log_z = math.log(sum(math.exp(v) for v in values))
    return [v - log_z for v in values]


def test_dino_cross_entropy_by_hand() -> None:
    loss = DINOLoss(prototypes=2, student_temp=0.5)
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    # sample 1: logits / 0.5 = [2, 0]; sample 2: [0, 2]
    a = log_softmax_by_hand([2.0, 0.0])
    b = log_softmax_by_hand([0.0, 2.0])
    ce1 = -(0.75 * a[0] + 0.25 * a[1])
    ce2 = -(0.5 * b[0] + 0.5 * b[1])
    expected = (ce1 + ce2) / 2
    assert loss([student], [teacher]).item() == pytest.approx(expected, rel=1e-6)
    # every (student, teacher) pair is summed
    assert loss([student, student], [teacher, teacher]).item() == pytest.approx(4 * expected, rel=1e-6)


def test_softmax_centering_by_hand() -> None:
    loss = DINOLoss(prototypes=2, center_momentum=0.9)
    loss.update_center(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))  # batch mean [2, 1]
    assert loss.center[0].tolist() == pytest.approx([0.2, 0.1])
    probs = loss.softmax_center_teacher(torch.tensor([[0.3, 0.1]]), teacher_temp=0.1)
    # (0.3 - 0.2) / 0.1 = 1 and (0.1 - 0.1) / 0.1 = 0
    p0 = math.exp(1) / (math.exp(1) + 1)
    assert probs.tolist()[0] == pytest.approx([p0, 1 - p0], rel=1e-6)
    loss.update_center(torch.tensor([[0.0, 0.0]]))
    assert loss.center[0].tolist() == pytest.approx([0.18, 0.09])


def test_sinkhorn_by_hand() -> None:
    # exp(logits) = [[3, 1], [1, 3]] is already balanced: each row becomes [3/4, 1/4] or [1/4, 3/4]
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    q = sinkhorn_knopp(logits, teacher_temp=1.0)
    assert q[0].tolist() == pytest.approx([0.75, 0.25])
    assert q[1].tolist() == pytest.approx([0.25, 0.75])
    # an unbalanced batch: rows still sum to 1 and each prototype gets close to B / K of the mass
    q = sinkhorn_knopp(torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.0, 0.2], [1.0, 0.5, 0.0]]), 0.5, iterations=3)
    assert q.sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0], rel=1e-5)
    assert q.sum(dim=0).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.05)


def test_ibot_masked_patches_by_hand() -> None:
    loss = IBOTPatchLoss(prototypes=2, student_temp=1.0)
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    weights = torch.tensor([0.5, 0.5, 1.0])  # crop A has 2 masked patches, crop B one
    terms = [
        math.log(0.5),
        0.5 * sum(log_softmax_by_hand([1.0, 0.0])),
        log_softmax_by_hand([0.0, 2.0])[1],
    ]
    expected = -(0.5 * terms[0] + 0.5 * terms[1] + 1.0 * terms[2]) / 4  # 4 global crops in the batch
    assert loss(student, teacher, weights, n_crops=4).item() == pytest.approx(expected, rel=1e-6)


def test_ibot_centre_kept_without_masked_patches() -> None:
    loss = IBOTPatchLoss(prototypes=3)
    loss.update_center(torch.zeros(0, 3))
    assert loss.center.abs().sum().item() == 0.0


def test_koleo_by_hand() -> None:
    koleo = KoLeoLoss()
    # nearest neighbours: 0 -> 1 (distance sqrt .8), 1 -> 2 (sqrt .4), 2 -> 1 (sqrt .4)
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    expected = -(math.log(math.sqrt(0.8)) + 2 * math.log(math.sqrt(0.4))) / 3
    assert koleo(x).item() == pytest.approx(expected, rel=1e-5)
    # scale does not matter: features are L2-normalised first
    assert koleo(3 * x).item() == pytest.approx(expected, rel=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sinkhorn_worker(rank: int, port: int, logits: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        half = logits.chunk(2)[rank]
        q = sinkhorn_knopp(half, teacher_temp=0.1)
        out[rank] = q
        loss = DINOLoss(prototypes=logits.shape[1])
        loss.update_center(half)
        out[f"center{rank}"] = loss.center.clone()
    finally:
        dist.destroy_process_group()


def test_sinkhorn_and_centre_over_two_ranks_match_one_process() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_sinkhorn_worker, args=(free_port(), logits, out), nprocs=2, join=True)
        got = torch.cat([out[0], out[1]])
        centers = [out["center0"], out["center1"]]
    expected = sinkhorn_knopp(logits, teacher_temp=0.1)
    assert torch.allclose(got, expected, atol=1e-6)
    single = DINOLoss(prototypes=5)
    single.update_center(logits)
    for c in centers:
        assert torch.allclose(c, single.center, atol=1e-6)
