"""Threshold tuning at scale: dnn_cool against a plain numpy sweep and sklearn's TunedThresholdClassifierCV.

`--samples` scores (float32, as a model gives them) for each of `--tasks` binary tasks, about 10% of the labels
missing. Three ways to pick each task's F1-optimal threshold:

- **dnn_cool**: `flow.get_decoder().tune(scores, targets, precondition='none')` over all tasks: masks, the exact
  sweep over every distinct score, and the results' confusion counts (`ThresholdResult.confusion`, `counts_at`).
  Its `.curve` DataFrame is built on first read, so it is timed separately for one task.
- **numpy sweep** (the strong baseline): what an expert writes by hand for one task: drop the missing labels,
  argsort descending, cumulative sums at the last sample of each run of tied scores, F1 at each, argmax.
- **sklearn**: `TunedThresholdClassifierCV(FrozenEstimator(model), thresholds=100, scoring='f1')`, on a model whose
  `predict_proba` returns the stored scores, for `--sklearn-tasks` tasks (it is slow).

The objective each reaches on the tuning data is printed too: the exact sweeps reach the best F1 over every
threshold; sklearn's 100-point grid can only come close.

usage: python benchmarks/bench_tuning.py [--samples 1000000] [--tasks 32] [--sklearn-tasks 1]
"""
import argparse
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import f1_score
from sklearn.model_selection import TunedThresholdClassifierCV

import dnn_cool  # noqa: F401  (flow.get_decoder)
from dnn_cool import BinaryClassificationTask, Project

try:
    from sklearn.frozen import FrozenEstimator
except ImportError:  # sklearn < 1.6: cv='prefit' instead
    FrozenEstimator = None


class StoredScores(ClassifierMixin, BaseEstimator):
    "A fitted 'model' whose X is the score itself: `predict_proba(X)[:, 1] == X[:, 0]`."
    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self
    def predict_proba(self, X):
        p = np.asarray(X)[:, 0].astype(np.float64)
        return np.stack([1 - p, p], 1)


def make_data(n, n_tasks, seed=0):
    g = np.random.default_rng(seed)
    scores, targets = {}, {}
    for i in range(n_tasks):
        rate = 0.05 + 0.45 * i / max(n_tasks - 1, 1)
        y = (g.random(n) < rate).astype(np.float32)
        logit = (1.0 + 0.05 * i) * (2 * y - 1) + g.normal(size=n)
        s = (1 / (1 + np.exp(-logit))).astype(np.float32)
        y[g.random(n) < 0.1] = np.nan  # missing labels
        scores[f't{i}'], targets[f't{i}'] = torch.from_numpy(s), torch.from_numpy(y)
    return scores, targets


def numpy_sweep(s, y):
    "The hand-written exact F1 sweep for one task: (threshold, f1)."
    keep = ~np.isnan(y)
    s, y = s[keep], y[keep] > 0.5
    order = np.argsort(-s)
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tp = np.cumsum(y)[last]
    fp = last + 1 - tp
    fn = y.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    j = int(np.argmax(f1))
    return float(s[last[j]]), float(f1[j])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--samples', type=int, default=1_000_000)
    ap.add_argument('--tasks', type=int, default=32)
    ap.add_argument('--sklearn-tasks', type=int, default=1, help='tasks to time sklearn on (0 skips it)')
    ap.add_argument('--repeats', type=int, default=3, help='best of this many runs of ours and of the numpy sweep')
    args = ap.parse_args()
    torch.set_num_threads(1)
    scores, targets = make_data(args.samples, args.tasks)
    project = Project([BinaryClassificationTask(p) for p in scores])
    def body(flow, x, out):
        for p in scores: out += getattr(flow, p)(x.f)
        return out
    flow = project.add_flow(body, name='many')
    decoder = flow.get_decoder()

    t_ours, results = float('inf'), None
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = decoder.tune(scores, targets, precondition='none', apply=False)
        t_ours = min(t_ours, time.perf_counter() - start)
    start = time.perf_counter()
    results['t0'].curve  # noqa: B018  (the DataFrame of one task, built on first read)
    t_curve = time.perf_counter() - start

    t_np, sweeps = float('inf'), None
    for _ in range(args.repeats):
        start = time.perf_counter()
        sweeps = {p: numpy_sweep(scores[p].numpy(), targets[p].numpy()) for p in scores}
        t_np = min(t_np, time.perf_counter() - start)
    for p in scores:  # the same optimum
        assert abs(results[p].score - sweeps[p][1]) < 1e-12, (p, results[p].score, sweeps[p][1])

    print(f'{args.samples:,} samples x {args.tasks} binary tasks, float32 scores, ~10% labels missing, one thread')
    print(f'dnn_cool FlowDecoder.tune, all tasks : {t_ours:8.3f} s  ({t_ours / args.tasks * 1e3:7.1f} ms a task)')
    print(f'numpy sweep by hand, all tasks       : {t_np:8.3f} s  ({t_np / args.tasks * 1e3:7.1f} ms a task)'
          f'  -> dnn_cool / numpy = {t_ours / t_np:.2f}x')
    print(f'  (one task\'s .curve DataFrame, built on first read: {t_curve * 1e3:.0f} ms)')

    if args.sklearn_tasks:
        t_sk, gaps = 0.0, []
        for p in list(scores)[:args.sklearn_tasks]:
            s, y = scores[p].numpy(), targets[p].numpy()
            keep = ~np.isnan(y)
            X, yy = s[keep, None], (y[keep] > 0.5).astype(int)
            model = StoredScores().fit(X, yy)
            est = (TunedThresholdClassifierCV(FrozenEstimator(model), thresholds=100, scoring='f1') if FrozenEstimator
                   else TunedThresholdClassifierCV(model, thresholds=100, scoring='f1', cv='prefit', refit=False))
            start = time.perf_counter()
            est.fit(X, yy)
            t_sk += time.perf_counter() - start
            f1_sk = f1_score(yy, est.predict(X))
            f1_ours = f1_score(yy, s[keep] >= results[p].threshold)
            gaps.append(f1_ours - f1_sk)
            print(f'task {p}: F1 on the tuning data: dnn_cool {f1_ours:.6f} (threshold {results[p].threshold:.6f}), '
                  f'sklearn {f1_sk:.6f} (threshold {est.best_threshold_:.6f})')
        per_sk = t_sk / args.sklearn_tasks
        print(f'sklearn TunedThresholdClassifierCV   : {per_sk:8.3f} s a task  -> sklearn / dnn_cool per task = '
              f'{per_sk / (t_ours / args.tasks):.0f}x; objective dnn_cool - sklearn >= {min(gaps):.2e}')


if __name__ == '__main__':
    main()
