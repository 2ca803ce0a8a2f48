"""numpy oracles for the mixed-task data tests: built from the raw indexed documents, not from the data package's
position code, so the two can disagree."""
from __future__ import annotations

import numpy as np


def text_stream_oracle(docs, orders, bos, eos):
    """The text stream of ``text_sample: window``: epochs of ``[bos] doc [eos]`` in the given document orders, as
    (inputs, labels, document-start flags) over positions (position p feeds inputs[p] and predicts labels[p])."""
    inputs, labels, starts = [], [], []
    for order in orders:
        for d in order:
            doc = np.asarray(docs[d], dtype=np.int64)
            inputs.append(np.concatenate([[bos], doc]))
            labels.append(np.concatenate([doc, [eos]]))
            starts.append(np.arange(len(doc) + 1) == 0)
    return np.concatenate(inputs), np.concatenate(labels), np.concatenate(starts)


def expected_row(train, k, text_oracle):
    """What packed row ``k`` must hold, assembled from the pack index's runs and the oracles: whole samples from
    their templated tokens, text runs from ``text_oracle`` (the stream over enough epochs). Returns a dict of
    numpy arrays over the row's used positions (tokens, labels, loss_mask, task_ids, position_ids, segment_ids)."""
    idx = train.index
    lo, hi = int(idx.offsets[k]), int(idx.offsets[k + 1])
    parts = {key: [] for key in ("tokens", "labels", "loss_mask", "task_ids", "starts")}
    previous_end = None
    for n, a, length in zip(idx.sample[lo:hi], idx.start[lo:hi], idx.length[lo:hi]):
        dataset = train.stream.task_datasets[train.stream.dataset_index[n]]
        j = int(train.stream.dataset_sample_index[n])
        if dataset.splittable:
            begin = j * dataset.window + int(a)
            x, y, st = (arr[begin:begin + length] for arr in text_oracle)
            st = st.copy()
            st[0] = st[0] or previous_end != begin
            parts["tokens"].append(x)
            parts["labels"].append(y)
            parts["loss_mask"].append(np.ones(length, np.float32))
            previous_end = begin + int(length)
        else:
            sample = dataset.sample(j)
            assert a == 0 and length == sample.footprint, "whole samples are never split"
            parts["tokens"].append(sample.tokens[:-1])
            parts["labels"].append(sample.tokens[1:])
            parts["loss_mask"].append(sample.target[1:].astype(np.float32))
            st = np.arange(length) == 0
            previous_end = None
        parts["task_ids"].append(np.full(length, dataset.task))
        parts["starts"].append(st)
    out = {key: np.concatenate(v) for key, v in parts.items()}
    starts = out.pop("starts")
    seg, pos = np.zeros(len(starts), np.int64), np.zeros(len(starts), np.int64)
    for p in range(len(starts)):  # plain loop on purpose: an oracle for the vectorised code
        if p > 0:
            seg[p] = seg[p - 1] + (1 if starts[p] else 0)
            pos[p] = 0 if starts[p] else pos[p - 1] + 1
    out["segment_ids"], out["position_ids"] = seg, pos
    return out
