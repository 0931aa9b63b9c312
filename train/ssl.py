"""The DINOv2 student/teacher pair and the objective that combines DINO, iBOT and KoLeo.

The student's whole forward pass (global crops with iBOT masks, local crops, one head call over CLS tokens and
masked patch tokens) is one ``forward`` call, so DDP sees one forward per backward. The teacher is an EMA copy that
sees the global crops unmasked.
"""

from __future__ import annotations

import torch
from torch import nn

from gapless.train.config import LossConfig, PretrainConfig
from gapless.train.head import DINOHead
from gapless.train.losses import DINOLoss, IBOTPatchLoss, KoLeoLoss, sinkhorn_knopp
from gapless.train.masking import MaskBatch
from gapless.train.vit import VisionTransformer, build_vit


class SSLModel(nn.Module):
    """Backbone + DINO head (shared by the CLS and the iBOT patch tokens)."""

    def __init__(self, backbone: VisionTransformer, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, global_crops: torch.Tensor, local_crops: torch.Tensor, masks: MaskBatch
    ) -> dict[str, torch.Tensor]:
        """Student pass: prototype scores of global CLS, local CLS and masked patches, plus global CLS features."""
        g = self.backbone.forward_features(global_crops, masks.masks)
        cls_global = g["x_norm_clstoken"]
        tokens = [cls_global]
        if local_crops.shape[0]:
            tokens.append(self.backbone.forward_features(local_crops)["x_norm_clstoken"])
        tokens.append(g["x_norm_patchtokens"].flatten(0, 1)[masks.indices])
        sizes = [t.shape[0] for t in tokens]
        scores = self.head(torch.cat(tokens)).split(sizes)
        return {
            "global_cls_features": cls_global,
            "global_scores": scores[0],
            "local_scores": scores[1] if local_crops.shape[0] else scores[0][:0],
            "patch_scores": scores[-1],
        }

    @torch.no_grad()
    def teacher_forward(self, global_crops: torch.Tensor, masks: MaskBatch) -> dict[str, torch.Tensor]:
        """Teacher pass: prototype scores of the (unmasked) global CLS tokens and of the patches the student lost."""
        g = self.backbone.forward_features(global_crops)
        cls, patches = g["x_norm_clstoken"], g["x_norm_patchtokens"].flatten(0, 1)[masks.indices]
        scores = self.head(torch.cat([cls, patches]))
        return {"global_scores": scores[: cls.shape[0]], "patch_scores": scores[cls.shape[0] :]}


def build_models(cfg: PretrainConfig) -> tuple[SSLModel, SSLModel]:
    """Student (with drop path) and teacher (without), starting from the same weights."""
    m, size = cfg.model, cfg.data.augment.global_size

    def head(dim: int) -> DINOHead:
        return DINOHead(dim, m.head_prototypes, m.head_hidden, m.head_bottleneck)

    student_backbone = build_vit(m, size)
    student = SSLModel(student_backbone, head(student_backbone.embed_dim))
    teacher_backbone = build_vit(m, size, drop_path=0.0)
    teacher = SSLModel(teacher_backbone, head(teacher_backbone.embed_dim))
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher.eval()


def compile_blocks(*models: SSLModel) -> None:
    """``torch.compile`` every transformer block in place (parameter names and checkpoints stay as they are); each
    block compiles once per crop size."""
    for model in models:
        for block in model.backbone.blocks:
            block.compile()


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, over all parameters at once."""
    t, s = list(teacher.parameters()), list(student.parameters())
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1.0 - momentum)


@torch.no_grad()
def collapse_monitors(targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropies of the teacher's CLS targets [B, K]: the mean per-sample entropy and the entropy of the mean.

    Both near log K: uniform collapse (every sample gets the same flat target); both near 0: one prototype wins
    for every sample. Healthy training has a sharp per-sample target and a broad marginal.
    """
    t = targets.float()
    per_sample = -(t * torch.log(t.clamp_min(1e-12))).sum(dim=-1).mean()
    mean = t.mean(dim=0)
    marginal = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    return {"teacher_entropy": per_sample, "teacher_marginal_entropy": marginal}


class DINOv2Objective(nn.Module):
    """Total loss and its parts; holds the centring buffers, which belong in every checkpoint."""

    def __init__(self, cfg: LossConfig, prototypes: int, n_global: int, n_local: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_global, self.n_local = n_global, n_local
        self.dino = DINOLoss(prototypes, cfg.student_temp, cfg.center_momentum)
        self.ibot = IBOTPatchLoss(prototypes, cfg.student_temp, cfg.center_momentum)
        self.koleo = KoLeoLoss()

    @torch.no_grad()
    def teacher_targets(self, teacher: dict[str, torch.Tensor], temp: float) -> tuple[torch.Tensor, torch.Tensor]:
        cls, patch = teacher["global_scores"], teacher["patch_scores"]
        if self.cfg.centering == "sinkhorn":
            n_patch = torch.tensor(patch.shape[0], device=patch.device)
            it = self.cfg.sinkhorn_iterations
            return sinkhorn_knopp(cls, temp, it), sinkhorn_knopp(patch, temp, it, n_rows=n_patch)
        cls_t = self.dino.softmax_center_teacher(cls, temp)
        patch_t = self.ibot.softmax_center_teacher(patch, temp)
        self.dino.update_center(cls)
        self.ibot.update_center(patch)
        return cls_t, patch_t

    def forward(
        self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], masks: MaskBatch, temp: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, n_g, n_l = self.cfg, self.n_global, self.n_local
        cls_targets, patch_targets = self.teacher_targets(teacher, temp)
        t_chunks = cls_targets.chunk(n_g)
        s_global = student["global_scores"].chunk(n_g)
        # Every student crop against every teacher global crop of another view: the average over those pairs.
        n_terms = max(n_g * (n_g - 1) + n_g * n_l, 1)
        dino_global = sum(self.dino([s_global[i]], [t for j, t in enumerate(t_chunks) if j != i]) for i in range(n_g))
        dino_global = dino_global / n_terms
        dino_local = self.dino(list(student["local_scores"].chunk(n_l)), list(t_chunks)) / n_terms if n_l else 0
        ibot = self.ibot(student["patch_scores"], patch_targets, masks.weights, n_crops=masks.masks.shape[0])
        koleo = sum(self.koleo(c) for c in student["global_cls_features"].chunk(n_g))
        total = cfg.dino_weight * (dino_global + dino_local) + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
        parts = {"dino_global": dino_global, "dino_local": dino_local, "ibot": ibot, "koleo": koleo}
        parts = {k: v.detach().float() if torch.is_tensor(v) else ibot.new_tensor(float(v)) for k, v in parts.items()}
        return total, {**parts, **collapse_monitors(cls_targets)}
