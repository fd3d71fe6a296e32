"""Typed backbone configurations and the published sizes.

``DecoderConfig`` covers the causal decoders (Qwen3, Qwen2, Llama/SmolLM2, Mistral, Gemma 3);
``BertConfig`` the bidirectional BERT encoders (all-MiniLM-L6-v2). Compute and parameter
dtypes are separate. A family is a set of architecture flags, set once where a checkpoint's
config is read (``hf.config_map``, ``hf.gguf_file``); the modules read the flags, never the
family name.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from resrank_jax.errors import ConfigError

AttentionImpl = Literal["xla", "cudnn", "reference"]
Family = Literal["qwen3", "qwen2", "llama", "mistral", "gemma3"]
RopeType = Literal["linear", "dynamic", "llama3"]
LayerType = Literal["full", "sliding"]
Activation = Literal["silu", "gelu_tanh"]

# Rematerialisation of each layer in the backward pass: ``none`` keeps every activation;
# ``full`` saves only the layer inputs and recomputes the rest; the others name the
# ``jax.checkpoint_policies`` entry of the same name that decides what is saved
# (``dots_saveable``: matmul outputs; ``dots_with_no_batch_dims_saveable``: matmuls with no
# batch dimension, i.e. the weight matmuls and not attention's; ``nothing_saveable``: the
# same as ``full``).
REMAT_CHOICES = (
    "none",
    "full",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "nothing_saveable",
)
# Configs saved before ``remat`` took a policy name had a boolean (JSON ``true``/``false``,
# or the strings of a ``model.remat=true`` override).
_LEGACY_REMAT = {True: "full", False: "none", "true": "full", "false": "none"}


def remat_choice(value: str | bool) -> str:
    """The name in ``REMAT_CHOICES`` of a ``remat`` setting (legacy booleans converted).

    Raises:
        ConfigError: an unknown name (one line, listing the choices).
    """
    if isinstance(value, bool) or value in _LEGACY_REMAT:
        return _LEGACY_REMAT[value]
    if value not in REMAT_CHOICES:
        raise ConfigError(f"remat={value!r}: choose from {', '.join(REMAT_CHOICES)}")
    return value


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """A RoPE frequency scaling as transformers defines it (``rope_scaling`` /
    ``rope_parameters`` of ``config.json``).

    ``linear``: every frequency divided by ``factor``. ``dynamic`` (NTK): the base grows with
    the batch's length beyond ``original_max_position_embeddings``. ``llama3``: low frequencies
    divided by ``factor``, high ones kept, the band between ``low_freq_factor`` and
    ``high_freq_factor`` interpolated (Llama 3.1+).
    """

    rope_type: RopeType
    factor: float
    original_max_position_embeddings: int | None = None
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.rope_type not in RopeType.__args__:
            raise ValueError(f"rope_type={self.rope_type!r}; choose from {RopeType.__args__}")
        if self.rope_type != "linear" and self.original_max_position_embeddings is None:
            raise ValueError(f"rope_type={self.rope_type!r} needs original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """A causal decoder of the Llama family and its relatives.

    ``qk_norm`` (per-head RMSNorm on q and k) is Qwen3 and Gemma 3; ``qkv_bias`` is Qwen2.
    ``rope_scaling`` scales the RoPE frequencies of full-attention layers (Llama 3.x).
    ``sliding_window`` is the window W of sliding layers: a token sees the W tokens up to
    itself (Mistral: every layer; Gemma 3: the layers ``layer_types`` marks ``sliding``, whose
    RoPE base is ``local_rope_theta``). Gemma 3's other flags: ``norm_plus_one`` (RMSNorm
    scales by ``1 + w`` in fp32), ``scale_embeddings`` (token embeddings times
    ``sqrt(hidden_size)``), ``sandwich_norms`` (norms after attention and around the MLP),
    ``mlp_activation`` ``gelu_tanh`` (GeGLU) and ``query_pre_attn_scalar`` (attention scale
    ``scalar**-0.5`` instead of ``head_dim**-0.5``). ``remat`` names the rematerialisation of
    each layer (``REMAT_CHOICES``). ``scan_layers`` stores the layers as one layer whose params
    carry a leading layer axis (logical name ``layers``) and runs them with ``jax.lax.scan``:
    one layer is compiled instead of ``num_layers``.
    """

    family: Family
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    has_lm_head: bool = True  # False for embedding checkpoints (Qwen3Model): no logits
    qk_norm: bool = False
    qkv_bias: bool = False
    max_position_embeddings: int = 32768
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"  # one of REMAT_CHOICES; legacy booleans are converted
    attention_impl: AttentionImpl = "xla"
    scan_layers: bool = False
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None
    layer_types: tuple[LayerType, ...] | None = None  # None: all sliding iff sliding_window
    local_rope_theta: float | None = None  # RoPE base of sliding layers (None: rope_theta)
    norm_plus_one: bool = False
    scale_embeddings: bool = False
    sandwich_norms: bool = False
    mlp_activation: Activation = "silu"
    query_pre_attn_scalar: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "remat", remat_choice(self.remat))
        if isinstance(self.rope_scaling, dict):  # from JSON
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        if self.layer_types is not None:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
            if len(self.layer_types) != self.num_layers or not set(self.layer_types) <= {
                "full",
                "sliding",
            }:
                raise ValueError(
                    f"layer_types must name 'full' or 'sliding' for each of the "
                    f"{self.num_layers} layers, got {self.layer_types}"
                )
        if "sliding" in self.kinds and not self.sliding_window:
            raise ValueError("sliding layers need sliding_window")
        if self.mlp_activation not in Activation.__args__:
            raise ValueError(f"mlp_activation={self.mlp_activation!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.attention_impl not in ("xla", "cudnn", "reference"):
            raise ValueError(f"unknown attention_impl {self.attention_impl!r}")

    def replace(self, **changes) -> DecoderConfig:
        return dataclasses.replace(self, **changes)

    @property
    def kinds(self) -> tuple[LayerType, ...]:
        """The attention kind of each layer: ``sliding`` or ``full``."""
        if self.layer_types is not None:
            return self.layer_types
        return ("sliding" if self.sliding_window else "full",) * self.num_layers

    @property
    def attention_scale(self) -> float:
        """The factor on q.k: ``query_pre_attn_scalar**-0.5``, else ``head_dim**-0.5``."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """A bidirectional BERT encoder (post-LayerNorm, GELU, absolute positions)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    add_pooler: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"  # one of REMAT_CHOICES; legacy booleans are converted
    attention_impl: AttentionImpl = "xla"
    family: Literal["bert"] = "bert"

    def __post_init__(self) -> None:
        object.__setattr__(self, "remat", remat_choice(self.remat))
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> BertConfig:
        return dataclasses.replace(self, **changes)


BackboneConfig = DecoderConfig | BertConfig


def with_scan_layers(cfg: BackboneConfig, scan_layers: bool) -> BackboneConfig:
    """``cfg`` with ``scan_layers`` set if it is a decoder; BERT's layers stay unrolled."""
    return cfg.replace(scan_layers=scan_layers) if isinstance(cfg, DecoderConfig) else cfg


_QWEN3 = dict(family="qwen3", vocab_size=151936, head_dim=128, qk_norm=True, rope_theta=1e6)

# Published Qwen3 sizes (HF config.json of each model). Qwen3-Embedding-N has the backbone of
# Qwen3-N without the LM head.
PRESETS: dict[str, DecoderConfig] = {
    "qwen3-0.6b": DecoderConfig(
        **_QWEN3,
        hidden_size=1024,
        intermediate_size=3072,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        max_position_embeddings=40960,
    ),
    "qwen3-1.7b": DecoderConfig(
        **_QWEN3,
        hidden_size=2048,
        intermediate_size=6144,
        num_layers=28,
        num_heads=16,
        num_kv_heads=8,
        max_position_embeddings=40960,
    ),
    "qwen3-4b": DecoderConfig(
        **_QWEN3,
        hidden_size=2560,
        intermediate_size=9728,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        max_position_embeddings=40960,
    ),
    "qwen3-8b": DecoderConfig(
        **_QWEN3,
        hidden_size=4096,
        intermediate_size=12288,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        max_position_embeddings=40960,
        tie_word_embeddings=False,
    ),
    "smollm2-135m": DecoderConfig(
        family="llama",
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
    ),
}


def gemma3_layer_types(num_layers: int, pattern: int = 6) -> tuple[LayerType, ...]:
    """Gemma 3's interleaving: every ``pattern``-th layer is global, the others sliding."""
    return tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(num_layers))


def _gemma3(num_layers: int, **sizes) -> DecoderConfig:
    """A Gemma 3 text decoder of ``num_layers`` layers (every 6th global) and ``sizes``."""
    return DecoderConfig(
        family="gemma3",
        num_layers=num_layers,
        layer_types=gemma3_layer_types(num_layers),
        head_dim=256,
        query_pre_attn_scalar=256,
        rope_theta=1e6,
        local_rope_theta=10000.0,
        qk_norm=True,
        norm_plus_one=True,
        scale_embeddings=True,
        sandwich_norms=True,
        mlp_activation="gelu_tanh",
        **sizes,
    )


# Published Gemma 3 text decoders (HF config.json of google/gemma-3-270m, gemma-3-1b-it and
# the text tower of gemma-3-4b-it).
_GEMMA3_SMALL = dict(
    vocab_size=262144, num_heads=4, num_kv_heads=1, sliding_window=512,
    max_position_embeddings=32768,
)  # fmt: skip
PRESETS["gemma3-270m"] = _gemma3(18, hidden_size=640, intermediate_size=2048, **_GEMMA3_SMALL)
PRESETS["gemma3-1b"] = _gemma3(26, hidden_size=1152, intermediate_size=6912, **_GEMMA3_SMALL)
PRESETS["gemma3-4b"] = _gemma3(
    34,
    vocab_size=262208,
    hidden_size=2560,
    intermediate_size=10240,
    num_heads=8,
    num_kv_heads=4,
    sliding_window=1024,
    rope_scaling=RopeScaling("linear", 8.0),
    max_position_embeddings=131072,
)
for _size in ("0.6b", "4b", "8b"):
    PRESETS[f"qwen3-embedding-{_size}"] = PRESETS[f"qwen3-{_size}"].replace(has_lm_head=False)


Phi = Literal["identity", "rescale", "scale", "linear", "mlp"]
Residual = Literal["norm_sum", "sum", "alpha", "gated", "none"]
QueryVector = Literal["last", "last_plus_encoder", "gated"]
ProjectorInit = Literal["normal", "orthogonal"]


@dataclasses.dataclass(frozen=True)
class ResRankConfig:
    """The [choice] flags of ResRank (SPEC.md section 1), defaults as specified there.

    Attributes:
        phi: map from passage embedding to slot input embedding: ``identity``; ``rescale``
            (L2-normalise, multiply by the mean token-embedding norm; default); ``scale``
            (learnable scalar, initialised to that norm); ``linear`` or ``mlp`` (2-layer GELU,
            PE-Rank) projectors, required when encoder and reranker widths differ.
        residual: ``norm_sum`` ``norm(h)+norm(e)`` (default), ``sum`` ``h+e``, ``alpha``
            ``h + alpha*e`` (learnable alpha), ``gated`` ``norm(e) + g*norm(h)`` (learnable
            gate ``g``, initialised to ``gate_init``), ``none`` (ablation: score on ``h`` alone).
        query_vector: ``last`` (final state of the last prompt token, default),
            ``last_plus_encoder`` (plus the encoder's query vector ``u``) or ``gated``
            ``norm(u) + g*norm(h_q)`` (the same gate). With ``residual='gated'``,
            ``query_vector='gated'``, ``gate_init=0`` and a norm-preserving ``phi`` (identity,
            or ``linear`` with ``projector_init='orthogonal'``) the untrained model scores
            exactly the encoder's cosine: training starts from the dense ranker.
        score_scale: multiplies the cosine scores (RankNet's kappa is separate).
        projector_hidden: hidden width of the ``mlp`` projector (default: reranker width).
        projector_init: ``normal`` (std 0.02) or ``orthogonal`` (orthonormal rows when the
            encoder is narrower: the ``linear`` projector then preserves cosines).
        gate_init: initial value of the gate ``g``.
        center_slots: our variant (not in the paper): subtract the mean state of the list's
            real slots from every slot state and from the reranker's query state before the
            residual and the query vector use them. A decoder's final states share one large
            direction (measured: mean pairwise cosine 0.95 between SmolLM2's 100 slot states
            of a DL19 list), so ``norm(h)`` barely differs between passages; centred, each
            slot state keeps only what sets it apart from the list.
    """

    phi: Phi = "rescale"
    residual: Residual = "norm_sum"
    query_vector: QueryVector = "last"
    score_scale: float = 1.0
    projector_hidden: int | None = None
    projector_init: ProjectorInit = "normal"
    gate_init: float = 0.0
    center_slots: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (
            ("phi", Phi),
            ("residual", Residual),
            ("query_vector", QueryVector),
            ("projector_init", ProjectorInit),
        ):
            if getattr(self, name) not in allowed.__args__:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose from {allowed.__args__}")

    @property
    def gated(self) -> bool:
        """Whether the model has the learnable gate ``g``."""
        return self.residual == "gated" or self.query_vector == "gated"

    @property
    def needs_query_vector(self) -> bool:
        """Whether scoring needs the encoder's query vector ``u``."""
        return self.query_vector != "last"
