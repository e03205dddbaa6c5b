"""A lean one-token decoding step for Llama-family models (Qwen2, Qwen3, Llama, Mistral).

`transformers`' forward is general: per call it builds masks, walks cache objects and output
dataclasses, and runs q/k/v and gate/up as separate matmuls. For one new token per row that
bookkeeping costs as much as the arithmetic on small models. This module runs the same
computation straight from the model's own parameters: q/k/v and gate/up fused into one matmul
each (a snapshot of the weights taken when the decoder is built, i.e. once per rollout), a
preallocated KV cache written in place, and attention over the filled prefix only. The prompt
is encoded once per rollout by the same blocks (`_prefill`), which fill the cache. Models it
does not recognise fall back to the general path (`supports` says which).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from tempo.models.lora import is_lora
from tempo.models.policy import decoder_body, position_ids_from_mask

SUPPORTED_TYPES = ("qwen2", "qwen3", "llama", "mistral")
#: `fuse=None` stacks q/k/v and gate/up weights only for models up to this many parameters:
#: the stacked copy costs about 2/3 of the decoder's weights in memory, which matters for large
#: models, whose matmuls are big enough that separate calls cost little extra.
FUSE_MAX_PARAMS = 200_000_000


def supports(model: PreTrainedModel) -> str | None:
    """None when the fast step reproduces `model`'s forward, else the reason it cannot."""
    if is_lora(model):
        return "LoRA adapters (the fast step reads the base weights only)"
    config = model.config
    if config.model_type not in SUPPORTED_TYPES:
        return f"model_type {config.model_type!r} (fast step knows {', '.join(SUPPORTED_TYPES)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r}"
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return "sliding-window attention layers"
    if config.model_type == "mistral" and getattr(config, "sliding_window", None):
        return "sliding-window attention"
    return None


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm as the HF models compute it: normalise in float32, scale in the input dtype."""
    dtype = x.dtype
    if dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)  # one fused kernel, same arithmetic
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


#: (weight, bias) of linears whose outputs are used concatenated: one stacked pair, or several.
Projection = list[tuple[Tensor, Tensor | None]]


def _project(x: Tensor, parts: Projection) -> Tensor:
    if len(parts) == 1:
        return F.linear(x, *parts[0])
    return torch.cat([F.linear(x, w, b) for w, b in parts], dim=-1)


def _projection(linears: list[torch.nn.Linear], fuse: bool) -> Projection:
    if not fuse:
        return [(linear.weight, linear.bias) for linear in linears]
    return [(torch.cat([linear.weight for linear in linears]), _fused_bias(*linears))]


@dataclass
class _Layer:
    ln1: Tensor
    ln2: Tensor
    qkv: Projection
    q_scale: float | None  # applied to q when not folded into the weights
    w_o: Tensor
    b_o: Tensor | None
    gate_up: Projection
    w_down: Tensor
    b_down: Tensor | None
    q_norm: Tensor | None
    k_norm: Tensor | None
    keys: Tensor | None = None  # [B, Hkv, S, D], preallocated for prompt + new tokens
    values: Tensor | None = None


def _fused_bias(*parts: torch.nn.Linear) -> Tensor | None:
    """The biases of linears whose weights are stacked (zeros for those without), or None."""
    if all(p.bias is None for p in parts):
        return None
    return torch.cat(
        [p.bias if p.bias is not None else p.weight.new_zeros(p.weight.shape[0]) for p in parts]
    )


class FastDecoder:
    """Encodes a left-padded prompt batch, then decodes one token per row per `step` call.

    Holds its own KV cache for `prompt_len + max_new_tokens` positions. Outputs are the last
    hidden states after the final norm, as `model.base_model(...).last_hidden_state[:, -1]`.
    `fuse` stacks q/k/v and gate/up into one matmul each (a copy of those weights); None =
    for models of at most `FUSE_MAX_PARAMS` parameters.
    """

    @torch.no_grad()
    def __init__(
        self,
        model: PreTrainedModel,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        max_new_tokens: int,
        fuse: bool | None = None,
    ) -> None:
        config = model.config
        if fuse is None:
            fuse = sum(p.numel() for p in model.parameters()) <= FUSE_MAX_PARAMS
        body = decoder_body(model)
        batch, prompt_len = prompt_ids.shape
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.scaling = self.head_dim**-0.5
        self.prompt_len = prompt_len
        self.embed = body.embed_tokens.weight
        self.final_norm = body.norm.weight

        total = prompt_len + max_new_tokens
        self.layers: list[_Layer] = []
        for layer in body.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = _projection([attn.q_proj, attn.k_proj, attn.v_proj], fuse)
            q_norm = attn.q_norm.weight if hasattr(attn, "q_norm") else None
            # The 1/sqrt(D) of the attention scores, folded into the query (RoPE is linear;
            # with a query norm it must scale the norm's output instead).
            q_scale = None
            if q_norm is not None:
                q_norm = q_norm * self.scaling
            elif fuse:  # the stacked weights are our copy
                rows = self.heads * self.head_dim
                weight, bias = qkv[0]
                weight[:rows] *= self.scaling
                if bias is not None:
                    bias[:rows] *= self.scaling
            else:
                q_scale = self.scaling
            self.layers.append(
                _Layer(
                    ln1=layer.input_layernorm.weight,
                    ln2=layer.post_attention_layernorm.weight,
                    qkv=qkv,
                    q_scale=q_scale,
                    w_o=attn.o_proj.weight,
                    b_o=attn.o_proj.bias,
                    gate_up=_projection([mlp.gate_proj, mlp.up_proj], fuse),
                    w_down=mlp.down_proj.weight,
                    b_down=mlp.down_proj.bias,
                    q_norm=q_norm,
                    k_norm=attn.k_norm.weight if hasattr(attn, "k_norm") else None,
                )
            )
        # Rotary tables for every position of every row, prompt and new tokens: [B, S, 1, D]
        # (the sign of rotate-half lives in signed_sin). Prompt positions skip left padding.
        positions = position_ids_from_mask(prompt_mask)
        steps = torch.arange(1, max_new_tokens + 1, device=prompt_ids.device)
        positions = torch.cat([positions, positions[:, -1:] + steps], dim=1)
        x = F.embedding(prompt_ids, self.embed)
        cos, sin = body.rotary_emb(x, positions)
        half = self.head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        self.cos, self.signed_sin = cos[:, :, None], sin[:, :, None]
        self.first_hidden = self._prefill(x, prompt_mask, total)

        # Additive key mask over the whole cache: prompt padding is never attended to.
        self.key_bias: Tensor | None = None
        if not bool(prompt_mask.bool().all()):
            neg = torch.finfo(self.first_hidden.dtype).min
            bias = torch.zeros(
                batch, total, dtype=self.first_hidden.dtype, device=prompt_ids.device
            )
            bias[:, :prompt_len].masked_fill_(~prompt_mask.bool(), neg)
            self.key_bias = bias[:, None, None]  # [B, 1, 1, S]

    def _attention_input(
        self, x: Tensor, layer: _Layer, cos: Tensor, sin: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The pre-norm attention inputs of residual stream x [..., d]: q and k after RoPE
        stacked [..., H + Hkv, D] (q first, already scaled by 1/sqrt(D)), and v [..., Hkv, D]."""
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        lead, qk_width = x.shape[:-1], (heads + kv_heads) * dim
        qkv = _project(_rms(x, layer.ln1, self.eps), layer.qkv)
        if layer.q_scale is not None:
            qkv.narrow(-1, 0, heads * dim).mul_(layer.q_scale)
        qk = qkv.narrow(-1, 0, qk_width).view(*lead, heads + kv_heads, dim)
        v = qkv.narrow(-1, qk_width, kv_heads * dim).view(*lead, kv_heads, dim)
        if layer.q_norm is not None:
            q = _rms(qk.narrow(-2, 0, heads), layer.q_norm, self.eps)
            k = _rms(qk.narrow(-2, heads, kv_heads), layer.k_norm, self.eps)
            qk = torch.cat((q, k), -2)
        return qk * cos + qk.roll(dim // 2, -1) * sin, v

    def _mlp(self, x: Tensor, layer: _Layer) -> Tensor:
        """x plus the layer's pre-norm SwiGLU block of x."""
        gate_up = _project(_rms(x, layer.ln2, self.eps), layer.gate_up)
        inner = gate_up.shape[-1] // 2
        act = F.silu(gate_up.narrow(-1, 0, inner)) * gate_up.narrow(-1, inner, inner)
        return x + F.linear(act, layer.w_down, layer.b_down)

    def _prefill(self, x: Tensor, prompt_mask: Tensor, total: int) -> Tensor:
        """Encode the prompt embeddings x [B, P, d] with the same blocks as `step`, filling
        the KV cache; returns the last position's hidden state. Causal attention that skips
        left padding; a padding query attends to itself (its output is never used, but must
        not be NaN)."""
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        batch, length = prompt_mask.shape
        cos, sin = self.cos[:, :length], self.signed_sin[:, :length]
        idx = torch.arange(length, device=x.device)
        allowed = (idx[None, :] <= idx[:, None]) & prompt_mask.bool()[:, None, :]
        allowed = (allowed | torch.eye(length, dtype=torch.bool, device=x.device))[:, None]
        for layer in self.layers:
            qk, v = self._attention_input(x, layer, cos, sin)
            q, k = qk[:, :, :heads].transpose(1, 2), qk[:, :, heads:].transpose(1, 2)
            v = v.transpose(1, 2)
            shape = (batch, kv_heads, total, dim)
            layer.keys, layer.values = k.new_empty(shape), v.new_empty(shape)
            layer.keys[:, :, :length] = k
            layer.values[:, :, :length] = v
            out = F.scaled_dot_product_attention(
                q, k.to(q.dtype), v.to(q.dtype), attn_mask=allowed, scale=1.0, enable_gqa=True
            )  # the 1/sqrt(D) is already in q
            out = out.transpose(1, 2).reshape(batch, length, heads * dim)
            x = self._mlp(x + F.linear(out, layer.w_o, layer.b_o), layer)
        return _rms(x[:, -1], self.final_norm, self.eps)

    def keep(self, rows: Tensor) -> None:
        """Go on with only `rows` (indices into the current batch), e.g. those still decoding."""
        for layer in self.layers:
            layer.keys = layer.keys.index_select(0, rows)
            layer.values = layer.values.index_select(0, rows)
        self.cos = self.cos.index_select(0, rows)
        self.signed_sin = self.signed_sin.index_select(0, rows)
        if self.key_bias is not None:
            self.key_bias = self.key_bias.index_select(0, rows)

    @torch.no_grad()
    def step(self, token: Tensor, t: int) -> Tensor:
        """Feed the t-th new token of every row ([B] long); return the next hidden [B, d].

        Written for few Python-level calls per layer (narrow/select rather than indexing,
        one RoPE over q and k together), since at small sizes they cost as much as the math.
        """
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        batch = token.shape[0]
        pos, span = self.prompt_len + t, self.prompt_len + t + 1
        cos, sin = self.cos.select(1, pos), self.signed_sin.select(1, pos)
        bias = None if self.key_bias is None else self.key_bias.narrow(-1, 0, span)
        x = F.embedding(token, self.embed)
        for layer in self.layers:
            qk, v = self._attention_input(x, layer, cos, sin)
            layer.keys.select(2, pos).copy_(qk.narrow(1, heads, kv_heads))
            layer.values.select(2, pos).copy_(v)
            keys, values = layer.keys.narrow(2, 0, span), layer.values.narrow(2, 0, span)
            # Grouped-query attention without repeating K/V: [B, Hkv, G, D] x [B, Hkv, D, S].
            q = qk.narrow(1, 0, heads).view(batch, kv_heads, heads // kv_heads, dim)
            scores = torch.matmul(q, keys.transpose(-1, -2))
            if bias is not None:
                scores = scores + bias
            weights = torch.softmax(scores.float(), dim=-1).to(values.dtype)
            attn = torch.matmul(weights, values).reshape(batch, heads * dim)
            x = self._mlp(x + F.linear(attn, layer.w_o, layer.b_o), layer)
        return _rms(x, self.final_norm, self.eps)
