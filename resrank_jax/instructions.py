"""Per-dataset instructions of E2Rank's released evaluation (github Alibaba-NLP/E2Rank,
``src/eval.py``, ``EVAL_PROMPTS``): for each dataset the listwise (pseudo-query) instruction
and the query instruction of the Qwen3-Embedding format ``Instruct: {task}\\nQuery:{q}``.

As released, listwise reranking uses the ``default`` (web search) instruction for every
dataset (``set_prompt_template`` runs only in its embedding mode); ``Recipe.instructions``
names the entry a model uses, and ``eval.py --instructions per-dataset`` picks each dataset's.
"""

from __future__ import annotations

import dataclasses
import re

from resrank_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Instructions:
    """``rerank``: the pseudo-query's first line (ends with ``:``); ``items``: the heading of
    the listed documents; ``query``: the task of ``Instruct: {task}\\nQuery:{q}``."""

    rerank: str
    query: str
    items: str = "Documents"


_WEB = Instructions(
    "Given a web search query and some relevant documents, rerank the documents that answer "
    "the query:",
    "Given a web search query, retrieve relevant passages that answer the query",
)
INSTRUCTIONS: dict[str, Instructions] = {
    "default": _WEB,
    "dl19": _WEB,
    "dl20": _WEB,
    "covid": Instructions(
        "Given a query on COVID-19 and some relevant documents, rerank the documents that "
        "answer the query:",
        "Given a query on COVID-19, retrieve documents that answer the query",
    ),
    "nfc": Instructions(
        "Given a question and some relevant documents, rerank the documents that best answer "
        "the query:",
        "Given a question, retrieve relevant documents that best answer the question",
    ),
    "touche": Instructions(
        "Given a question and some arguments, rerank the detailed and persuasive arguments "
        "that answer the question:",
        "Given a question, retrieve detailed and persuasive arguments that answer the question",
        "Arguments",
    ),
    "dbpedia": Instructions(
        "Given a query and some relevant entities, rerank the best descriptions from DBPedia:",
        "Given a query, retrieve relevant entity descriptions from DBPedia",
        "Entities",
    ),
    "scifact": Instructions(
        "Given a scientific claim and some relevant documents, rerank the documents that best "
        "support or refute the claim:",
        "Given a scientific claim, retrieve documents that support or refute the claim",
    ),
    "signal": Instructions(
        "Given a news article title and some relevant tweets, rerank the tweets that are most "
        "relevant to the query:",
        "Given a news article title, retrieve relevant tweets",
        "Tweets",
    ),
    "news": Instructions(
        "Given a news article title and some relevant documents, rerank the documents that "
        "best answer the query:",
        "Given a news headline, retrieve relevant relevant news articles that provide "
        "important context or background information",
    ),
    "robust04": Instructions(
        _WEB.rerank,
        "Given a newswire query, retrieve relevant news articles that address the query.",
    ),
}
# Dataset names as this project writes them (folder names, ir_datasets ids, table names).
_ALIASES = {
    "trec-dl19": "dl19",
    "trec-dl-2019": "dl19",
    "trec-dl20": "dl20",
    "trec-dl-2020": "dl20",
    "trec-covid": "covid",
    "nfcorpus": "nfc",
    "webis-touche2020": "touche",
    "dbpedia-entity": "dbpedia",
    "signal1m": "signal",
    "trec-news": "news",
}


def dataset_key(name: str) -> str:
    """The ``INSTRUCTIONS`` key of a dataset name such as ``SciFact-test``, ``scifact/test``,
    ``irds:beir/trec-covid`` or ``DL19``; ``default`` when none matches."""
    parts = [p for p in re.split(r"[/:\s]+", name.lower()) if p]
    for part in parts:
        for candidate in (part, re.sub(r"[-_](train|dev|test)$", "", part)):
            if candidate in INSTRUCTIONS:
                return candidate
            if candidate in _ALIASES:
                return _ALIASES[candidate]
    return "default"


def instructions_for(key: str) -> Instructions:
    if key not in INSTRUCTIONS:
        raise ConfigError(f"unknown instructions {key!r}; choose from {', '.join(INSTRUCTIONS)}")
    return INSTRUCTIONS[key]


def encoder_query(tokenizer, query: str, key: str) -> str:
    """The encoder input of ``query`` with the query instruction of ``key``, in the format of
    the encoder's pooling convention (``Instruct: {task}\nQuery:{q}`` for LLM encoders, the
    raw query for BERT models, which were trained without instructions)."""
    return tokenizer.query_text(query, instructions_for(key).query)
