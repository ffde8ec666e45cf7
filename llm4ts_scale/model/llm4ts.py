"""LLM4TS: RevIN -> patches -> token + positional + temporal encodings -> first K blocks of a
pre-trained decoder (as inputs_embeds) -> alignment head (stage 1) or forecasting head (stage 2)."""

from __future__ import annotations

import torch
from torch import nn

from llm4ts_scale.core.covariates import covariate_features, covariate_width
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.model.adapters import is_norm, is_position_table, owned_parameter_names
from llm4ts_scale.model.backbone import BackboneInfo, is_quantized, logical_numel, memory_bytes
from llm4ts_scale.model.encoder import CalendarSpec, PatchEncoder, Patching, RevIN
from llm4ts_scale.model.groups import GROUPS
from llm4ts_scale.model.heads import AlignHead, ForecastHead


class LLM4TS(nn.Module):
    """Parameters live in named groups (see groups.py): `param_groups()`, `set_trainable(groups)`.

    `backbone` is the PEFT-wrapped base decoder, so `model.backbone.save_pretrained(dir)` writes
    the LoRA adapter alone.
    """

    def __init__(self, backbone: nn.Module, info: BackboneInfo, patching: Patching, pred_len: int,
                 calendar: CalendarSpec, options, covariates: tuple[int, int] = (0, 0)):
        """`options`: the run's model settings (llm4ts_scale/core/config.py:ModelConfig): conv_kernel, dropout,
        revin_affine, tune_norms, tune_positions, embed_init, head and the read-out are read from it.
        `covariates`: how many known and past covariates the data has (they enter the linear shortcut)."""
        super().__init__()
        self.info = info
        seq_len, patch_len = patching.seq_len, patching.patch_len
        self.seq_len, self.pred_len, self.patch_len, self.stride = seq_len, pred_len, patch_len, patching.stride
        self.calendar_attrs = list(calendar.attrs)
        missing = [a for a in (calendar.use or []) if a not in self.calendar_attrs]
        if missing:
            raise UserError(f"model.calendar lists {missing[0]!r}, which this data's frequency does not resolve "
                            f"(it has {self.calendar_attrs}); choose among those, or auto/none")
        d_model = info.hidden_size
        self.revin = RevIN(affine=options.revin_affine)
        # A backbone with a learned absolute position table (GPT-2's wpe) adds positions itself; a second
        # table in the encoder would only duplicate it. Rotary backbones (LLaMA, Qwen, ...) get ours.
        self.encoder = PatchEncoder(patching, d_model, calendar, conv_kernel=options.conv_kernel,
                                    dropout=options.dropout,
                                    embed_scale=info.embed_std if options.embed_init == "backbone" else None,
                                    positions=info.max_positions is None)
        self.num_patches = self.encoder.num_patches
        if info.max_positions is not None and self.num_patches > info.max_positions:
            raise UserError(f"{self.num_patches} patches exceed the {info.max_positions} positions of backbone "
                            f"{info.name!r}; lower data.seq_len or raise data.stride")
        self.backbone = backbone
        self.align_head = AlignHead(d_model, patch_len)
        self.read_layers = read_layer_indices(options.read_layers, info.layers_loaded)
        self.read_pool = options.read_pool
        # What the forecasting head reads per sample: tokens x width (the official head: T x D of block K)
        self.feature_shape = (self.num_patches if self.read_pool == "flatten" else 1, d_model * len(self.read_layers))
        self._reads_earlier_blocks = self.read_layers != (info.layers_loaded,)
        if self._reads_earlier_blocks:
            final_norm(backbone)  # a backbone without one is refused here, at build time
        self.covariates = covariates  # (known, past) counts
        self.head = ForecastHead(self.feature_shape[1], self.feature_shape[0], pred_len, options.dropout,
                                 shortcut_len=seq_len if options.head == "flatten+linear" else None,
                                 cov_width=covariate_width(*covariates, seq_len, pred_len))
        # Backbone parameters that may train besides LoRA, by full name (stable: module structure is fixed).
        self._norm_names = ({f"backbone.{n}" for n in owned_parameter_names(backbone, is_norm)}
                            if options.tune_norms else set())
        self._position_names = ({f"backbone.{n}" for n in owned_parameter_names(backbone, is_position_table)}
                                if options.tune_positions else set())
        self.set_trainable(set(GROUPS) - {"frozen"})
        self.train()  # from_pretrained leaves the backbone in eval mode; one mode for the whole model

    # ------------------------------------------------------------------ forward

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor, hidden: torch.Tensor | None = None,
                 known: torch.Tensor | None = None, past: torch.Tensor | None = None) -> torch.Tensor:
        """[B, H] forecasts in the input's units; `hidden`: cached features in place of encoder + backbone;
        `known` [B, L + H, K] and `past` [B, L, K]: the window's covariates, standardized."""
        stats = self.revin.statistics(x)
        z = self.revin.normalize(x, stats)
        h = self.readout(z, x_mark) if hidden is None else hidden.to(self.head.proj.weight.dtype)
        return self.revin.denormalize(self.head(h, z, self.covariate_features(known, past)), stats)

    def covariate_features(self, known: torch.Tensor | None, past: torch.Tensor | None) -> torch.Tensor | None:
        """What the head's covariate map reads (None without covariates); refuses a batch that lacks them."""
        if self.head.cov is None:
            return None
        for name, count, given in (("known", self.covariates[0], known), ("past", self.covariates[1], past)):
            if count and (given is None or given.shape[-1] != count):
                raise UserError(f"this model reads {count} {name} covariate(s); the data gives "
                                f"{0 if given is None else given.shape[-1]}: pass the covariate columns it was trained with")
        return covariate_features(known, past, self.seq_len)

    def align(self, x: torch.Tensor, x_mark: torch.Tensor, future: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, target), each [B, T-1, P] normalized; `future` [B, S]: the S values after the look-back."""
        stats = self.revin.statistics(x)
        return self.align_normalized(self.revin.normalize(x, stats), self.revin.normalize(future, stats), x_mark)

    def features(self, x: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:
        """What the forecasting head reads [B, *feature_shape] (linear probing reads and may cache it)."""
        return self.readout(self.revin.normalize(x, self.revin.statistics(x)), x_mark)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor, task: str = "forecast",
                future: torch.Tensor | None = None, hidden: torch.Tensor | None = None,
                known: torch.Tensor | None = None, past: torch.Tensor | None = None):
        """One entry for wrappers that only call forward (a DeepSpeed engine, DDP): `task` picks forecast,
        align or features above. Code holding the plain module calls those methods directly."""
        if task == "align":
            if future is None:
                raise ValueError("task 'align' needs future: the S values that follow the look-back")
            return self.align(x, x_mark, future)
        if task == "features":
            return self.features(x, x_mark)
        if task != "forecast":
            raise ValueError(f"task must be 'forecast', 'align' or 'features', got {task!r}")
        return self.forecast(x, x_mark, hidden, known, past)

    def align_normalized(self, z: torch.Tensor, z_future: torch.Tensor, x_mark: torch.Tensor):
        """Next-patch prediction on the RevIN-normalized series z (before the affine, which is learnable
        and would otherwise let the loss shrink the target). Strictly causal in z: token t sees
        patches <= t (causal token conv, causal attention), and predicts patch t+1 of the true series,
        so the last prediction's target holds the S values after the look-back (z_future, normalized
        with the look-back's statistics: nothing of the future leaks into RevIN).
        Causality holds on z, not on raw x: RevIN's window statistics summarize the whole window."""
        if z_future.shape[1] != self.stride:
            raise ValueError(f"future has {z_future.shape[1]} steps, alignment needs stride={self.stride}")
        h = self.hidden(z, x_mark)
        pred = self.align_head(h[:, :-1])
        shifted = torch.cat([z[:, self.stride:], z_future], dim=1)  # the look-back moved S steps on
        target = shifted.unfold(1, self.patch_len, self.stride)  # [B, T-1, P], no padding
        return pred, target

    def hidden(self, z: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:
        """Backbone hidden states [B, T, D] of the last block for the normalized series z (alignment reads them)."""
        return self._backbone_states(z, x_mark, every_layer=False)[-1]

    def readout(self, z: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:
        """The forecasting head's input [B, tokens, width]: the chosen blocks' states side by side, pooled."""
        if not self._reads_earlier_blocks:
            h = self.hidden(z, x_mark)
        else:
            states, norm = self._backbone_states(z, x_mark, every_layer=True), final_norm(self.backbone)
            h = torch.cat([states[k] if k == self.info.layers_loaded else norm(states[k]).to(states[k].dtype)
                           for k in self.read_layers], dim=-1)
        if self.read_pool == "mean":
            return h.mean(dim=1, keepdim=True)
        return h[:, -1:] if self.read_pool == "last" else h

    def _backbone_states(self, z: torch.Tensor, x_mark: torch.Tensor, every_layer: bool) -> tuple[torch.Tensor, ...]:
        """(embeddings, block 1, ..., block K) with `every_layer`, else (block K,); block K after the final norm."""
        e = self.encoder(self.revin.affine(z), x_mark).to(self.info.compute_dtype)
        out = self.backbone(inputs_embeds=e, use_cache=False, output_hidden_states=every_layer)
        dtype = self.head.proj.weight.dtype
        if not every_layer:
            return (out.last_hidden_state.to(dtype),)
        return tuple(s.to(dtype) for s in (*out.hidden_states[:-1], out.last_hidden_state))

    # ------------------------------------------------------------------ parameter groups

    def group_of(self, name: str) -> str:
        top = name.split(".", 1)[0]
        if top in ("revin", "head", "align_head"):
            return top
        if top == "encoder":
            return "embeddings"
        if any(part.startswith("lora_") for part in name.split(".")):
            return "lora"
        if name in self._norm_names:
            return "norms"
        if name in self._position_names:
            return "positions"
        return "backbone" if self.info.init == "scratch" else "frozen"

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every parameter, by group; every group present (possibly empty); order = module order."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in GROUPS}
        for name, p in self.named_parameters():
            groups[self.group_of(name)].append((name, p))
        return groups

    def set_trainable(self, groups: set[str]) -> None:
        """requires_grad exactly for the given groups; 4-bit weights and `frozen` never train."""
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown parameter group(s) {sorted(unknown)}; known: {list(GROUPS)}")
        if "frozen" in groups:
            raise ValueError("the 'frozen' group cannot be trained")
        for group, params in self.param_groups().items():
            for _, p in params:
                p.requires_grad_(group in groups and not is_quantized(p) and p.is_floating_point())

    def trainable_count(self, groups: set[str]) -> int:
        return sum(logical_numel(p) for g in groups for _, p in self.param_groups()[g] if not is_quantized(p))

    def summary(self, stage_groups: dict[str, set[str]] | None = None) -> dict:
        """What a user checks before renting GPUs (the `describe` command prints it)."""
        groups = self.param_groups()
        return {
            "backbone": self.info.name,
            "backbone_source": self.info.source,
            "backbone_class": self.info.class_name,
            "model_type": self.info.model_type,
            "quantize": self.info.quantize,
            "layers_loaded": self.info.layers_loaded,
            "layers_total": self.info.layers_total,
            "hidden_size": self.info.hidden_size,
            "num_patches": self.num_patches,
            "head_features": self.feature_shape[0] * self.feature_shape[1],
            "calendar_attrs": self.calendar_attrs,
            "params_total": sum(logical_numel(p) for _, p in self.named_parameters()),
            "groups": {g: sum(logical_numel(p) for _, p in ps) for g, ps in groups.items()},
            "trainable": {stage: self.trainable_count(gs) for stage, gs in (stage_groups or {}).items()},
            "backbone_bytes": memory_bytes(self.backbone, skip=lambda n: "lora_" in n),
        }


def read_layer_indices(setting, layers: int) -> tuple[int, ...]:
    """model.read_layers as sorted 1-based block indices: last -> (K,), all -> (1..K), a list as given."""
    if setting == "last":
        return (layers,)
    if setting == "all":
        return tuple(range(1, layers + 1))
    return tuple(sorted(set(setting)))


def final_norm(backbone: nn.Module) -> nn.Module:
    """The decoder's norm after its last block (LLaMA-likes' `norm`, GPT-2's `ln_f`): applied to an earlier
    block's states, it puts them on the scale the last block's states have (as a logit lens does)."""
    base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    raise UserError(f"backbone {type(base).__name__} has no final norm to read earlier layers through; "
                    "use model.read_layers=last")
