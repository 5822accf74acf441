"""CC: Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019 (arXiv:1904.01802).

RepDistiller's version (code from the paper's authors), not the paper's Gaussian-kernel correlation
matrix: both pooled features go through a trainable linear embedding, and the loss couples each
sample with the next one in the batch through the element-wise gap between the two embeddings.
"""

from __future__ import annotations

from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register
from models.util import LinearEmbed


class Correlation(nn.Module):
    """mean_i sum_d |e_s - e_t|[i, d] * |e_s - e_t|[i+1, d] over the B-1 consecutive pairs (i, i+1).

    A batch of one has no pair: RepDistiller then returns NaN (mean of nothing); we return 0 so a
    lone last batch cannot poison the run.
    """

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        if f_s.shape[0] < 2:
            return f_s.new_zeros(())
        delta = (f_s - f_t).abs()
        return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class CCMethod(DistillMethod):
    """Embeds both pooled features (``F[-1]``) to ``--feat_dim`` and applies :class:`Correlation`.

    As in RepDistiller the teacher-side embedding is trainable too (and weight-decayed with the
    student); it sees the detached teacher feature. Pitfall kept on purpose: with both projections
    free, the loss has a trivial minimum at embed_s = embed_t = 0 (every gap vanishes) and nothing
    pins the embeddings down; it is harmless only because the default weight (-b 0.02) is tiny next
    to the cross-entropy.
    """

    def __init__(self, dim_s: int, dim_t: int, feat_dim: int):
        super().__init__()
        self.embed_s = LinearEmbed(dim_s, feat_dim)
        self.embed_t = LinearEmbed(dim_t, feat_dim)
        self.criterion = Correlation()

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion(self.embed_s(batch.feat_s[-1]), self.embed_t(batch.feat_t[-1].detach()))


def build(ctx: MethodContext) -> CCMethod:
    feat_dim = int(ctx.opt.feat_dim)
    if feat_dim < 1:
        raise ValueError(f"--feat_dim must be a positive embedding size for CC, got {feat_dim}")
    return CCMethod(ctx.feat_s[-1].shape[1], ctx.feat_t[-1].shape[1], feat_dim)


register(
    MethodSpec(
        name="correlation",
        batch_local=False,
        aliases=("cc",),
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=0.02),
        summary="correlation congruence on embedded pooled features (Peng et al. 2019, RD/authors' form)",
    )
)
