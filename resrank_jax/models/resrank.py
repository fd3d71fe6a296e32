"""ResRank: passage embeddings spliced into the Reranker-LLM as slot tokens, residual fusion of
slot states with the embeddings, and one cosine step per passage (no generated tokens).

Shapes: B queries, N candidate slots, L prompt length, Lp passage length, E encoder width,
D reranker width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from resrank_jax.losses import NEG
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.decoder import Decoder
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.layers import dense
from resrank_jax.models.pooling import l2_normalize


def mean_token_norm(decoder: Decoder) -> jax.Array:
    """Mean L2 norm of the reranker's input token embeddings (``embed_scale`` included; no
    gradient): the scale of a slot."""
    table = jax.lax.stop_gradient(decoder.embed_tokens.embedding[...].astype(jnp.float32))
    return jnp.mean(jnp.linalg.norm(table, axis=-1)) * decoder.embed_scale


def center_on_slots(
    h_bnd: jax.Array, h_q_bd: jax.Array, slot_mask_bn: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Slot states ``h [B, N, D]`` and query states ``h_q [B, D]`` minus the mean state of each
    list's real slots (``slot_mask`` 1; padded slots count for nothing)."""
    w_bn = slot_mask_bn.astype(h_bnd.dtype)
    count_b1 = jnp.maximum(jnp.sum(w_bn, axis=-1, keepdims=True), 1.0)
    mean_bd = jnp.einsum("bn,bnd->bd", w_bn, h_bnd) / count_b1
    return h_bnd - mean_bd[:, None], h_q_bd - mean_bd


class ResRank(nnx.Module):
    """Encoder-LLM + Reranker-LLM with slot splicing and residual fusion.

    Args:
        encoder: the Encoder-LLM (any backbone with pooling).
        reranker: the Reranker-LLM (a causal decoder).
        cfg: the [choice] flags.
    """

    def __init__(
        self, encoder: Encoder, reranker: Decoder, cfg: ResRankConfig, *, rngs: nnx.Rngs
    ) -> None:
        self.encoder, self.reranker, self.cfg = encoder, reranker, cfg
        e, d = encoder.width, reranker.cfg.hidden_size
        kw = dict(dtype="float32", param_dtype="float32", rngs=rngs)
        if cfg.projector_init == "orthogonal":
            kw["kernel_init"] = nnx.initializers.orthogonal()
        if cfg.phi in ("identity", "rescale", "scale") and e != d:
            raise ValueError(
                f"encoder width {e} != reranker width {d}: phi={cfg.phi!r} cannot bridge them; "
                "use phi='linear' or phi='mlp'"
            )
        if cfg.phi == "scale":
            self.slot_scale = nnx.Param(
                mean_token_norm(reranker), out_sharding=(), eager_sharding=False
            )
        elif cfg.phi == "linear":
            self.projector = dense(e, d, ("mlp", "embed"), use_bias=True, **kw)
        elif cfg.phi == "mlp":
            hidden = cfg.projector_hidden or d
            self.projector = dense(e, hidden, ("embed", "mlp"), use_bias=True, **kw)
            self.projector_out = dense(hidden, d, ("mlp", "embed"), use_bias=True, **kw)
        if cfg.residual == "alpha":
            self.alpha = nnx.Param(jnp.ones((), jnp.float32), out_sharding=(), eager_sharding=False)
        if cfg.gated:
            self.gate = nnx.Param(
                jnp.full((), cfg.gate_init, jnp.float32), out_sharding=(), eager_sharding=False
            )

    def project(self, e_bnd: jax.Array) -> jax.Array:
        """Passage (or query) embeddings in the reranker's width (identity unless a projector)."""
        if self.cfg.phi == "linear":
            return self.projector(e_bnd)
        if self.cfg.phi == "mlp":
            return self.projector_out(jax.nn.gelu(self.projector(e_bnd)))
        return e_bnd

    def slot_inputs(self, e_bnd: jax.Array) -> jax.Array:
        """``phi(e)``: the input embeddings of the slot tokens ``[B, N, D]``."""
        if self.cfg.phi == "rescale":
            return l2_normalize(e_bnd) * mean_token_norm(self.reranker)
        if self.cfg.phi == "scale":
            return l2_normalize(e_bnd) * self.slot_scale[...]
        return self.project(e_bnd)

    def fuse(self, h_bnd: jax.Array, e_bnd: jax.Array) -> jax.Array:
        """Residual fusion of slot states ``h`` with passage embeddings ``e`` (reranker width)."""
        mode = self.cfg.residual
        if mode == "none":
            return h_bnd
        if mode == "norm_sum":
            return l2_normalize(h_bnd) + l2_normalize(e_bnd)
        if mode == "sum":
            return h_bnd + e_bnd
        if mode == "gated":
            return l2_normalize(e_bnd) + self.gate[...] * l2_normalize(h_bnd)
        return h_bnd + self.alpha[...] * e_bnd

    def contextualize(
        self,
        e_bnd: jax.Array,
        prompt_ids_bl: jax.Array,
        prompt_mask_bl: jax.Array,
        slot_pos_bn: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """Runs the reranker once with ``phi(e)`` spliced into the slots.

        Returns the slot states ``h [B, N, D]`` and the query state ``h_q [B, D]`` (the last
        position: prompts are left-padded), both fp32. Padded slots point past the prompt
        (``slot_pos == L``) and splice nothing.
        """
        b, length = prompt_ids_bl.shape
        n = slot_pos_bn.shape[1]
        tok_bld = self.reranker.embed(prompt_ids_bl)
        x_bnd = self.slot_inputs(e_bnd.astype(jnp.float32)).astype(tok_bld.dtype)
        rows = jnp.arange(b)[:, None]
        slot_index_bl = (
            jnp.full((b, length), -1, jnp.int32)
            .at[rows, slot_pos_bn]
            .set(jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n)), mode="drop")
        )
        spliced_bld = jnp.take_along_axis(x_bnd, jnp.maximum(slot_index_bl, 0)[..., None], axis=1)
        inputs_bld = jnp.where(slot_index_bl[..., None] >= 0, spliced_bld, tok_bld)
        hidden_bld = self.reranker(inputs_embeds_bld=inputs_bld, attention_mask_bl=prompt_mask_bl)
        hidden_bld = hidden_bld.astype(jnp.float32)
        last = jnp.minimum(slot_pos_bn, length - 1)[..., None]
        return jnp.take_along_axis(hidden_bld, last, axis=1), hidden_bld[:, -1]

    def score(
        self,
        e_bnd: jax.Array,
        prompt_ids_bl: jax.Array,
        prompt_mask_bl: jax.Array,
        slot_pos_bn: jax.Array,
        slot_mask_bn: jax.Array,
        query_emb_bd: jax.Array | None = None,
    ) -> jax.Array:
        """Scores ``[B, N]`` from passage embeddings (fresh or cached); padded slots get NEG."""
        e_bnd = e_bnd.astype(jnp.float32)
        h_bnd, h_q_bd = self.contextualize(e_bnd, prompt_ids_bl, prompt_mask_bl, slot_pos_bn)
        if self.cfg.center_slots:
            h_bnd, h_q_bd = center_on_slots(h_bnd, h_q_bd, slot_mask_bn)
        if self.cfg.needs_query_vector:
            if query_emb_bd is None:
                raise ValueError(
                    f"query_vector={self.cfg.query_vector!r} needs the encoder query vector"
                )
            u_bd = self.project(query_emb_bd.astype(jnp.float32))
            if self.cfg.query_vector == "gated":
                h_q_bd = l2_normalize(u_bd) + self.gate[...] * l2_normalize(h_q_bd)
            else:
                h_q_bd = h_q_bd + u_bd
        r_bnd = self.fuse(h_bnd, self.project(e_bnd))
        cos_bn = jnp.einsum("bd,bnd->bn", l2_normalize(h_q_bd), l2_normalize(r_bnd))
        return jnp.where(slot_mask_bn.astype(bool), self.cfg.score_scale * cos_bn, NEG)

    def __call__(
        self,
        passage_ids_bnl: jax.Array,
        passage_mask_bnl: jax.Array,
        prompt_ids_bl: jax.Array,
        prompt_mask_bl: jax.Array,
        slot_pos_bn: jax.Array,
        slot_mask_bn: jax.Array,
        query_ids_bl: jax.Array | None = None,
        query_mask_bl: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Encodes passages (and the query, when given) and scores them end to end.

        Returns ``{"scores": [B, N], "passage_emb": [B, N, E], "query_emb": [B, E]}`` (the
        last only with query ids); gradients reach the encoder through the slots and the
        residual.
        """
        b, n, lp = passage_ids_bnl.shape
        e_bnd = self.encoder(
            passage_ids_bnl.reshape(b * n, lp), passage_mask_bnl.reshape(b * n, lp)
        ).reshape(b, n, -1)
        out = {"passage_emb": e_bnd}
        query_emb = None
        if query_ids_bl is not None:
            query_emb = out["query_emb"] = self.encoder(query_ids_bl, query_mask_bl)
        out["scores"] = self.score(
            e_bnd, prompt_ids_bl, prompt_mask_bl, slot_pos_bn, slot_mask_bn, query_emb
        )
        return out
