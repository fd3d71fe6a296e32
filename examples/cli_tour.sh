#!/usr/bin/env bash
# Every `resrank` command once, on the packaged data and real weights, from a temporary
# directory; writes what each printed (stdout and stderr, progress bars dropped) to
# examples/cli_tour.txt, which the README quotes. About 10 minutes on 2 CPU cores.
#
#   bash examples/cli_tour.sh   # $RESRANK, else `resrank` from PATH, else .venv/bin/resrank
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/cli_tour.txt"
RESRANK="${RESRANK:-$(command -v resrank || echo "$HERE/../.venv/bin/resrank")}"
PYTHON="$(dirname "$RESRANK")/python"
WORK="$(mktemp -d)/tour"; mkdir "$WORK"
trap 'rm -rf "$(dirname "$WORK")"' EXIT
cd "$WORK"
: > "$OUT"

step() {  # step "TITLE" CMD...: runs CMD, appends the command and its output to $OUT
  local title="$1"; shift
  printf '## %s\n$ %s\n' "$title" "$*" | sed "s#$RESRANK#resrank#g" >> "$OUT"
  "$@" 2>&1 | tr '\r' '\n' | grep -v -E '%\||it/s\]|query/s\]|batch/s\]|^\s*$|UserWarning|^\s+(passages|vectors|vectors =) ' \
    | sed "s#$WORK#.#g" >> "$OUT"
  printf '\n' >> "$OUT"
}

# the topics and BM25 run of 5 DL19 queries, as a user would bring them (TREC run + TSV)
"$PYTHON" - <<'EOF'
from resrank_jax.data.bundled import data_dir
from resrank_jax.data.formats import read_candidates, read_qrels
from resrank_jax.data.requests import read_topics
queries = read_candidates(data_dir() / "trec-dl19/candidates.jsonl")[:5]
with open("topics.tsv", "w") as f:
    f.writelines(f"{q.qid}\t{q.query}\n" for q in queries)
with open("bm25.run", "w") as f:
    for q in queries:
        f.writelines(f"{q.qid} Q0 {c.docid} {i + 1} {c.score} bm25\n"
                     for i, c in enumerate(q.candidates))
with open("collection.tsv", "w") as f:
    seen = {}
    for q in queries:
        seen.update({c.docid: c.text for c in q.candidates})
    f.writelines(f"{d}\t{t}\n" for d, t in seen.items())
with open("scifact-topics.tsv", "w") as f:  # the 300 judged test queries
    topics = read_topics(data_dir() / "scifact/queries.jsonl")
    f.writelines(f"{q}\t{topics[q]}\n" for q in read_qrels(data_dir() / "scifact/qrels.test.txt"))
EOF

step "train (the tiny preset, 4 steps)" \
  "$RESRANK" train --config tiny --output-dir runs/tiny steps=4 --quiet
step "eval (BM25 order of all 43 DL19 queries)" \
  "$RESRANK" eval --candidates data/trec-dl19/candidates.jsonl --qrels data/trec-dl19/qrels.txt \
  --ranker bm25 --quiet
step "rerank a TREC run without qrels" \
  "$RESRANK" rerank --run bm25.run --topics topics.tsv --corpus collection.tsv --ranker dense \
  --model all-minilm-l6-v2 --depth 20 --output-trec reranked.run --quiet
printf '$ head -3 reranked.run\n' >> "$OUT"; head -3 reranked.run >> "$OUT"; printf '\n' >> "$OUT"
step "rerank with qrels and chosen measures" \
  "$RESRANK" rerank --run bm25.run --topics topics.tsv --corpus collection.tsv --ranker dense \
  --model all-minilm-l6-v2 --depth 100 --qrels data/trec-dl19/qrels.txt \
  --measures "nDCG@10 RR(rel=2)@10 R(rel=2)@100" --max-queries 5 --quiet
step "export the trained tiny run" "$RESRANK" export runs/tiny artifacts/tiny
printf '$ ls artifacts/tiny\n' >> "$OUT"; ls artifacts/tiny >> "$OUT"; printf '\n' >> "$OUT"
step "index the whole SciFact corpus with zero-shot MiniLM" \
  "$RESRANK" index --corpus data/scifact/corpus.jsonl --model all-minilm-l6-v2 \
  --passage-max-length 128 --output idx/scifact --quiet
step "retrieve from the index: all 300 SciFact test queries" \
  "$RESRANK" rerank --index idx/scifact --topics scifact-topics.tsv --ranker dense \
  --model all-minilm-l6-v2 --passage-max-length 128 --depth 100 \
  --qrels data/scifact/qrels.test.txt --output-trec scifact-dense.run --quiet
echo "wrote $OUT"
