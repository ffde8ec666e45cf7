"""What turns a look-back window into backbone inputs: RevIN, patching, and the three summed encodings.

Shapes: x [B, L] (one channel per sample), x_mark [B, L, A] integer calendar attributes,
patches [B, T, P] with T = (L - P) / S + 2, embeddings [B, T, D].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Calendar attributes, in the order the data side emits them, and their table sizes.
# Must stay identical to llm4ts_scale/data/calendar.py:CALENDAR_SIZES (not imported: the model
# must not depend on the data stack).
CALENDAR_SIZES = {"month": 13, "day": 32, "weekday": 7, "hour": 24, "minute": 60, "second": 60}
HOURLY_ATTRS = ["month", "day", "weekday", "hour"]


@dataclass(frozen=True)
class Patching:
    """How a look-back of L steps becomes tokens: patches of P steps every S steps."""

    seq_len: int
    patch_len: int
    stride: int

    @property
    def num_patches(self) -> int:
        return num_patches(self.seq_len, self.patch_len, self.stride)


@dataclass(frozen=True)
class CalendarSpec:
    """The data's calendar attributes (x_mark columns, in order), the subset that gets a table (None: all),
    how a patch's steps are pooled (first or mean) and whether the tables start at zero."""

    attrs: tuple[str, ...]
    use: tuple[str, ...] | None = None
    pooling: str = "first"
    zero_init: bool = True


def num_patches(seq_len: int, patch_len: int, stride: int) -> int:
    """T = (L - P) / S + 2: one extra patch from replication-padding the end by S."""
    return (seq_len - patch_len) // stride + 2


def patchify(x: torch.Tensor, patch_len: int, stride: int) -> torch.Tensor:
    """[B, L, *rest] -> [B, T, P, *rest]: pad the end by repeating the last step S times, then unfold."""
    pad = x[:, -1:].expand(-1, stride, *x.shape[2:])
    return torch.cat([x, pad], dim=1).unfold(1, patch_len, stride).movedim(-1, 2)


class RevIN(nn.Module):
    """Reversible instance normalization over the look-back window (Kim et al. 2022).

    Statistics are detached (they are inputs, not something to learn through) and computed over
    the whole window, so every normalized value depends a little on the whole window: causality
    of the alignment objective holds on the normalized series, not on raw values.
    The affine is one scalar pair (every sample is a single channel).
    """

    def __init__(self, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1)) if affine else None
        self.bias = nn.Parameter(torch.zeros(1)) if affine else None

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return mean, std

    def normalize(self, x: torch.Tensor, stats) -> torch.Tensor:
        mean, std = stats
        return (x - mean) / std

    def affine(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.weight is None else z * self.weight + self.bias

    def to_head_space(self, y: torch.Tensor, stats) -> torch.Tensor:
        """The inverse of `denormalize`: what the forecasting head must output to forecast y exactly
        (the target of exact linear probing)."""
        mean, std = stats
        o = (y - mean) / std
        if self.weight is not None:
            o = o * (self.weight + self.eps * self.eps) + self.bias
        return o

    def denormalize(self, y: torch.Tensor, stats) -> torch.Tensor:
        mean, std = stats
        if self.weight is not None:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


class CausalTokenConv(nn.Module):
    """Token encoding: Conv1d over the patch axis (in=P, out=D), padded on the LEFT only.

    The paper pads circularly with a centered kernel. That leaks patch t+1 into token t and wraps
    the last patches into token 0, which makes next-patch alignment trivially solvable and
    non-causal. Left replicate padding keeps token t a function of patches <= t; forecasting uses
    the same module so what alignment learned transfers unchanged.
    """

    def __init__(self, patch_len: int, d_model: int, kernel: int = 3):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(patch_len, d_model, kernel_size=kernel, padding=0, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, patches: torch.Tensor) -> torch.Tensor:  # [B, T, P] -> [B, T, D]
        z = patches.transpose(1, 2)
        z = F.pad(z, (self.kernel - 1, 0), mode="replicate") if self.kernel > 1 else z
        # contiguous: a transposed [B, D, T] layout would propagate through the whole residual
        # stream of the backbone (elementwise ops keep strides) and turn every Linear into a slow bmm.
        return self.conv(z).transpose(1, 2).contiguous()


class TemporalEmbedding(nn.Module):
    """One learned table per calendar attribute (integers in, summed), pooled per patch.

    `attrs` are the attributes of the data's x_mark columns, in order; `use` the subset that gets a
    table. Pooling `first` takes each patch's first timestamp (the paper); `mean` averages the
    per-step embeddings over the patch.

    With `zero_init` the tables start at zero: a value never seen in training (a few-shot run sees
    one or two months) then adds nothing at test time, instead of a random vector as large as the
    signal. Gradients still reach every row that training indexes.
    """

    def __init__(self, attrs: list[str], d_model: int, patch_len: int, stride: int, pooling: str = "first",
                 use: list[str] | None = None, zero_init: bool = False):
        super().__init__()
        use = list(attrs) if use is None else list(use)
        unknown = [a for a in list(attrs) + use if a not in CALENDAR_SIZES]
        if unknown:
            raise ValueError(f"unknown calendar attribute {unknown[0]!r}; known: {list(CALENDAR_SIZES)}")
        missing = [a for a in use if a not in attrs]
        if missing:
            raise ValueError(f"calendar attribute {missing[0]!r} is not in the data's attributes {list(attrs)}")
        if pooling not in ("first", "mean"):
            raise ValueError(f"temporal pooling {pooling!r} is unknown; use first or mean")
        self.data_attrs = list(attrs)
        self.attrs = [a for a in attrs if a in use]  # data order
        self.columns = [self.data_attrs.index(a) for a in self.attrs]
        self.patch_len, self.stride, self.pooling = patch_len, stride, pooling
        self.tables = nn.ModuleDict({a: nn.Embedding(CALENDAR_SIZES[a], d_model) for a in self.attrs})
        if zero_init:
            for table in self.tables.values():
                nn.init.zeros_(table.weight)

    def forward(self, x_mark: torch.Tensor) -> torch.Tensor | None:  # [B, L, A] -> [B, T, D]
        if not self.attrs:
            return None
        if x_mark.shape[-1] != len(self.data_attrs):
            raise ValueError(f"x_mark has {x_mark.shape[-1]} calendar columns, the model expects {self.data_attrs}")
        marks = patchify(x_mark[..., self.columns].long(), self.patch_len, self.stride)  # [B, T, P, A]
        if self.pooling == "first":
            marks = marks[:, :, :1]
        emb = sum(table(marks[..., i]) for i, table in enumerate(self.tables.values()))  # [B, T, p, D]
        return emb.mean(dim=2)


class PatchEncoder(nn.Module):
    """token + positional (learned, per patch index) + temporal encodings, summed, then dropout.

    `embed_scale` (the backbone's own token-embedding std) puts the sum on the scale the pretrained
    blocks were trained on: in a pre-norm decoder each block adds an update of roughly fixed size to
    the residual stream, so an input 20x larger than a token embedding leaves the blocks little say.
    None keeps PyTorch's default initialization (conv: Kaiming, position table: N(0, 1)).
    `positions=False` when the backbone adds its own learned absolute positions (GPT-2's wpe).
    `calendar.zero_init`: see TemporalEmbedding.
    """

    def __init__(self, patching: Patching, d_model: int, calendar: CalendarSpec, *, conv_kernel: int = 3,
                 dropout: float = 0.1, embed_scale: float | None = None, positions: bool = True):
        super().__init__()
        patch_len, stride = patching.patch_len, patching.stride
        self.patch_len, self.stride = patch_len, stride
        self.num_patches = patching.num_patches
        self.token = CausalTokenConv(patch_len, d_model, conv_kernel)
        self.position = nn.Embedding(self.num_patches, d_model) if positions else None
        self.temporal = TemporalEmbedding(list(calendar.attrs), d_model, patch_len, stride, calendar.pooling,
                                          use=None if calendar.use is None else list(calendar.use),
                                          zero_init=calendar.zero_init)
        self.dropout = nn.Dropout(dropout)
        if embed_scale is not None:
            # inputs are RevIN-normalized (unit variance): weight std s / sqrt(fan_in) gives outputs of std s
            nn.init.normal_(self.token.conv.weight, std=embed_scale / (patch_len * conv_kernel) ** 0.5)
            if self.position is not None:
                nn.init.normal_(self.position.weight, std=embed_scale / 2)

    def forward(self, z: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, T, D]
        patches = patchify(z, self.patch_len, self.stride)
        if patches.shape[1] != self.num_patches:
            raise ValueError(f"input length {z.shape[1]} gives {patches.shape[1]} patches, the model expects {self.num_patches}")
        h = self.token(patches)
        if self.position is not None:
            h = h + self.position.weight
        temporal = self.temporal(x_mark)
        if temporal is not None:
            h = h + temporal
        return self.dropout(h)
