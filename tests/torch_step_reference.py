"""An independent PyTorch/transformers reference of one training step's objective.

Written from the method (``../shared/docs/SPEC.md``, sections 1 and 2), not from the JAX
code: the backbones are transformers' own ``BertModel`` (all-MiniLM-L6-v2, from the packaged
safetensors) and ``LlamaModel`` (SmolLM2-135M-Instruct, through transformers' GGUF loader),
the losses are written out as formulas. Only the freshly initialised ResRank parameters (the
linear projector, the gate) are copied in from the JAX model, since they are random.

- Encoder vector: mean pooling over real tokens (BERT) or the state of the last real token
  (decoders, left padding), then L2 norm.
- ResRank: ``phi(e) = W e + b`` replaces the input embedding of each slot token (through
  ``inputs_embeds``); residual ``norm(h) + norm(phi(e))`` (``norm_sum``) or
  ``norm(phi(e)) + g norm(h)`` (``gated``); query ``h_q`` = state of the last prompt token
  (``last``) or ``norm(phi(u)) + g norm(h_q)`` (``gated``, ``u`` the encoder's query
  vector); score ``cos(h_q, r)``.
- E2Rank: score = ``cos(pseudo-query, d)``, the pseudo-query embedded by the same encoder.
- RankNet: ``mean softplus(-kappa (s_i - s_j))`` over the valid pairs with
  ``label_i > label_j`` of the whole batch.
- InfoNCE: query ``b`` against all ``B*K`` candidates of the batch at temperature ``tau``,
  target = column ``b*K + positive[b]``; padded candidates, and every column holding a
  document that ``b`` judged positive (or a copy of its target), except the target itself,
  leave ``b``'s softmax.
- Total: ``sum_t w_t L_t``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from resrank_jax.hf.packaged import packaged_weights


def load_minilm(dtype: torch.dtype = torch.float32, attention: str = "eager"):
    """all-MiniLM-L6-v2 as transformers' ``BertModel``."""
    from transformers import BertModel

    model = BertModel.from_pretrained(
        str(packaged_weights("all-minilm-l6-v2")), attn_implementation=attention, dtype=dtype
    )
    return plain_autograd(model.train(False))


def load_smollm2(dtype: torch.dtype = torch.float32, attention: str = "eager"):
    """SmolLM2-135M-Instruct's body (``LlamaModel``) from the packaged GGUF file (dequantised
    by transformers). In float64 use ``attention="sdpa"``: transformers' eager float64 mask
    turns a left-padded row into NaN."""
    from transformers import LlamaForCausalLM

    path = packaged_weights("smollm2-135m-instruct")
    lm = LlamaForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, attn_implementation=attention, dtype=dtype
    )
    return plain_autograd(lm.model.train(False))


def plain_autograd(model):
    """``nn.Embedding(padding_idx=...)`` zeroes its pad row's gradient; SmolLM2's pad id is
    its EOS ``<|im_end|>``, a real token of every chat prompt, so the true gradient of that row
    is not zero. The reference takes plain autograd (pad positions contribute nothing anyway:
    they are masked out of every attention and pooling)."""
    model.get_input_embeddings().padding_idx = None
    return model


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Numpy batch -> tensors (integers as int64)."""
    return {
        k: torch.from_numpy(np.asarray(v).astype(np.int64 if v.dtype.kind in "iub" else v.dtype))
        for k, v in batch.items()
    }


def is_decoder(backbone) -> bool:
    return backbone.config.model_type != "bert"


def hidden_states(backbone, ids: torch.Tensor, mask: torch.Tensor | None = None, embeds=None):
    """Final hidden states ``[B, L, D]``. Decoders read RoPE positions that count real tokens
    only (left padding); BERT reads token type 0."""
    if is_decoder(backbone):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kw = {"inputs_embeds": embeds} if embeds is not None else {"input_ids": ids}
        return backbone(**kw, attention_mask=mask, position_ids=positions).last_hidden_state
    return backbone(
        input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
    ).last_hidden_state


def last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row (0 for an empty row)."""
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(dim=1).values


def encode(backbone, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised text vectors ``[B, D]``: mean over real tokens (BERT) or the last real
    token (decoders)."""
    h = hidden_states(backbone, ids, mask)
    if is_decoder(backbone):
        pooled = h[torch.arange(h.shape[0]), last_real_index(mask)]
    else:
        m = mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
    return F.normalize(pooled, dim=-1)


def encode_passages(encoder, batch) -> torch.Tensor:
    b, k, lp = batch["passage_ids"].shape
    flat = encode(
        encoder, batch["passage_ids"].reshape(b * k, lp), batch["passage_mask"].reshape(b * k, lp)
    )
    return flat.reshape(b, k, -1)


class TorchResRank(torch.nn.Module):
    """ResRank with a linear ``phi`` (SPEC section 1) on transformers backbones.

    Args:
        encoder / reranker: ``BertModel`` / ``LlamaModel``.
        projector_kernel / projector_bias: ``phi``'s weights in the JAX layout ``[E, D]``
            (copied, transposed to torch's ``[D, E]``).
        residual: ``norm_sum`` or ``gated``; query_vector: ``last`` or ``gated``.
        gate: the value of ``g`` (only with a gated residual or query).
    """

    def __init__(
        self,
        encoder,
        reranker,
        projector_kernel: np.ndarray,
        projector_bias: np.ndarray,
        *,
        residual: str,
        query_vector: str,
        gate: float | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.reranker = encoder, reranker
        dtype = next(encoder.parameters()).dtype
        e, d = projector_kernel.shape
        self.projector = torch.nn.Linear(e, d, dtype=dtype)
        with torch.no_grad():
            self.projector.weight.copy_(torch.from_numpy(np.array(projector_kernel).T))
            self.projector.bias.copy_(torch.from_numpy(np.array(projector_bias)))
        if residual not in ("norm_sum", "gated") or query_vector not in ("last", "gated"):
            raise ValueError(f"reference covers norm_sum/gated and last/gated, not {residual}")
        self.residual, self.query_vector = residual, query_vector
        if "gated" in (residual, query_vector):
            self.gate = torch.nn.Parameter(torch.tensor(float(gate), dtype=dtype))

    def forward(self, batch, *, with_query: bool):
        """``(scores [B, K] with padded slots at -inf, e [B, K, E], u [B, E] or None)``."""
        e = encode_passages(self.encoder, batch)
        u = None
        if with_query or self.query_vector == "gated":
            u = encode(self.encoder, batch["query_ids"], batch["query_mask"])
        x = self.projector(e)  # phi(e) [B, K, D]
        ids, mask, slot_pos = batch["prompt_ids"], batch["prompt_mask"], batch["slot_pos"]
        b, length = ids.shape
        valid = slot_pos < length  # padded slots point past the prompt
        rows = torch.arange(b)[:, None].expand_as(slot_pos)
        tokens = self.reranker.get_input_embeddings()(ids)
        inputs = tokens.index_put((rows[valid], slot_pos[valid]), x[valid])  # out of place
        h = hidden_states(self.reranker, ids, mask, embeds=inputs)
        h_slot = h[rows, slot_pos.clamp(max=length - 1)]  # [B, K, D]
        h_q = h[torch.arange(b), last_real_index(mask)]  # [B, D]
        if self.residual == "norm_sum":
            r = F.normalize(h_slot, dim=-1) + F.normalize(x, dim=-1)
        else:
            r = F.normalize(x, dim=-1) + self.gate * F.normalize(h_slot, dim=-1)
        if self.query_vector == "gated":
            h_q = F.normalize(self.projector(u), dim=-1) + self.gate * F.normalize(h_q, dim=-1)
        cos = torch.einsum("bd,bkd->bk", F.normalize(h_q, dim=-1), F.normalize(r, dim=-1))
        scores = cos.masked_fill(~batch["cand_mask"].bool(), float("-inf"))
        return scores, e, u


class TorchE2Rank(torch.nn.Module):
    """E2Rank (SPEC section 2): one embedding model; score = cos(pseudo-query, document)."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch, *, with_query: bool):
        e = encode_passages(self.encoder, batch)
        u = encode(self.encoder, batch["query_ids"], batch["query_mask"]) if with_query else None
        pseudo = encode(self.encoder, batch["prompt_ids"], batch["prompt_mask"])
        cos = torch.einsum("be,bke->bk", pseudo, e)
        return cos.masked_fill(~batch["cand_mask"].bool(), float("-inf")), e, u


def ranknet(scores, labels, cand_mask, kappa: float) -> torch.Tensor:
    """Mean ``softplus(-kappa (s_i - s_j))`` over the valid pairs ``label_i > label_j``."""
    terms = []
    for b in range(scores.shape[0]):
        real = torch.nonzero(cand_mask[b].bool()).flatten().tolist()
        for i in real:
            for j in real:
                if labels[b, i] > labels[b, j]:
                    terms.append(F.softplus(-kappa * (scores[b, i] - scores[b, j])))
    return torch.stack(terms).mean()


def infonce(u, e, batch, temperature: float, mask_false_negatives: bool = True):
    """InfoNCE of each query over the batch's ``B*K`` candidates (see the module docstring)."""
    b, k, _ = e.shape
    docs = e.reshape(b * k, -1)
    real = batch["cand_mask"].reshape(-1).bool().tolist()
    keys = batch["doc_key"].reshape(-1).tolist()
    judged = batch["qrels_labels"] > 0
    losses = []
    for q in range(b):
        target = q * k + int(batch["positive"][q])
        own = {keys[q * k + j] for j in range(k) if real[q * k + j] and bool(judged[q, j])}
        own.add(keys[target])
        kept = [
            m
            for m in range(b * k)
            if real[m] and (m == target or not mask_false_negatives or keys[m] not in own)
        ]
        logits = docs[kept] @ u[q] / temperature
        losses.append(torch.logsumexp(logits, 0) - logits[kept.index(target)])
    return torch.stack(losses).mean()


def step_loss(model, batch, weights: dict[str, float], *, kappa: float, temperature: float):
    """``(total, {term: value}, (scores, e, u))`` of one step: RankNet (``rank``) and InfoNCE
    (``ret``) weighted by ``weights``."""
    scores, e, u = model(batch, with_query="ret" in weights)
    terms = {}
    if "rank" in weights:
        terms["rank"] = ranknet(scores, batch["labels"], batch["cand_mask"], kappa)
    if "ret" in weights:
        terms["ret"] = infonce(u, e, batch, temperature)
    total = sum(w * terms[name] for name, w in weights.items())
    return total, terms, (scores, e, u)


# ---- parameter names: torch -> the JAX state path ----------------------------------------

_BERT_LAYER = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_output",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}
_BERT_TOP = {
    "embeddings.word_embeddings": "word_embeddings",
    "embeddings.position_embeddings": "position_embeddings",
    "embeddings.token_type_embeddings": "token_type_embeddings",
    "embeddings.LayerNorm": "embeddings_norm",
    "pooler.dense": "pooler",
}


def _leaf(module_name: str, leaf: str, jax_module: str) -> tuple[str, bool]:
    """``(jax path, transpose)`` of a torch leaf ``weight``/``bias`` of a module kind."""
    if leaf == "bias":
        return f"{jax_module}/bias", False
    if module_name.endswith("LayerNorm"):
        return f"{jax_module}/scale", False
    if module_name.startswith("embeddings."):
        return f"{jax_module}/embedding", False
    return f"{jax_module}/kernel", True


def bert_path(name: str) -> tuple[str, bool]:
    """``BertModel`` parameter name -> ``(path under the JAX Bert, transpose)``."""
    module, leaf = name.rsplit(".", 1)
    if module.startswith("encoder.layer."):
        _, _, i, rest = module.split(".", 3)
        return _leaf(rest, leaf, f"layers/{i}/{_BERT_LAYER[rest]}")
    return _leaf(module, leaf, _BERT_TOP[module])


def llama_path(name: str) -> tuple[str, bool]:
    """``LlamaModel`` parameter name -> ``(path under the JAX decoder, transpose)``."""
    module, leaf = name.rsplit(".", 1)
    path = module.replace(".", "/")
    if leaf != "weight":
        raise KeyError(f"unexpected Llama parameter {name!r}")
    if module == "embed_tokens":
        return "embed_tokens/embedding", False
    if module.endswith("norm"):
        return f"{path}/weight", False
    return f"{path}/kernel", True


def jax_named_grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Every parameter's gradient as float64 in the JAX layout (kernels ``[in, out]``; zeros
    where autograd gave none), keyed by the JAX state path ``a/b/0/c``."""
    out = {}
    for name, p in model.named_parameters():
        grad = np.zeros(p.shape) if p.grad is None else p.grad.detach().double().numpy()
        top, _, rest = name.partition(".")
        if top == "encoder":
            path, transpose = (llama_path if is_decoder(model.encoder) else bert_path)(rest)
            path = f"encoder/backbone/{path}"
        elif top == "reranker":
            path, transpose = llama_path(rest)
            path = f"reranker/{path}"
        elif top == "projector":
            transpose = rest == "weight"
            path = "projector/kernel" if transpose else "projector/bias"
        elif top == "gate":
            path, transpose = "gate", False
        else:
            raise KeyError(f"no JAX path for torch parameter {name!r}")
        out[path] = grad.T if transpose else grad
    return out
