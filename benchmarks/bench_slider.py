"""One threshold-slider move with 1,000,000 tuned samples: the whole Python side of the widget's handler.

A move sets the slider's value from Python, which runs what a move in the browser runs in the kernel: snap the
threshold to the scores' dtype, look up the counts, re-render that threshold's panel (chart and counts) and the
table. Ours looks the counts up in the tuner's confusion curve (`ThresholdResult.counts_at`, a binary search); the
baseline is what an expert writes without that curve: a vectorised numpy rescan of the million scores per move
(`scores >= t`, then the four counts), with the same rendering. The budget is 50 ms per move.

    python benchmarks/bench_slider.py            # 1,000,000 samples, 200 moves
    python benchmarks/bench_slider.py --n 100000 --moves 50
"""
import argparse
import os
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np

from dnn_cool.decoder import TuningResults
from dnn_cool.tuning import tune_threshold
from dnn_cool.views.thresholds import ThresholdCurves, ThresholdsView


class RescanCurves(ThresholdCurves):
    "The same curves, but `at(t)` counts by rescanning every score (the baseline)."
    def __init__(self, result, scores, y):
        super().__init__(result)
        self.scores, self.y, self.n_pos = scores, y, int(y.sum())

    def at(self, threshold):
        pred = self.scores >= np.asarray(threshold, self.scores.dtype)
        tp = int(np.count_nonzero(pred & self.y))
        fp = int(np.count_nonzero(pred)) - tp
        fn, tn = self.n_pos - tp, len(self.y) - self.n_pos - fp
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return dict(tp=tp, fp=fp, fn=fn, tn=tn, precision=p, recall=r, f1=2 * tp / (2 * tp + fp + fn) if tp else 0.0)


def time_moves(view, key, values) -> np.ndarray:
    slider = view.sliders[key]
    out = []
    for v in values:
        t0 = time.perf_counter()
        slider.value = float(v)  # runs the observer: snap, look up, re-render the panel and the table
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--n', type=int, default=1_000_000, help='tuned samples')
    ap.add_argument('--moves', type=int, default=200, help='slider moves timed per variant')
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    scores = rng.random(args.n).astype(np.float32)
    y = rng.random(args.n) < scores

    t0 = time.perf_counter()
    result = tune_threshold(scores, y)
    tune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    view = ThresholdsView(TuningResults({'task': result}))
    view.widget  # the sliders and panels
    build_s = time.perf_counter() - t0
    key = ('task', None)
    assert len(view.curves[key].x) > 0.9 * args.n  # a point per distinct score

    values = rng.uniform(0.02, 0.98, args.moves)
    ours = time_moves(view, key, values)
    shown = view.panels[key].value
    base_view = ThresholdsView(TuningResults({'task': result}))
    base_view.curves[key] = RescanCurves(result, scores, y)
    base_view.widget
    base = time_moves(base_view, key, values)
    assert base_view.panels[key].value == shown  # the same panel, counted both ways

    lookups = {}
    for name, curves in (('ours', view.curves[key]), ('baseline', base_view.curves[key])):
        t0 = time.perf_counter()
        for v in values: curves.at(float(v))
        lookups[name] = (time.perf_counter() - t0) / len(values) * 1e6

    print(f'{args.n:,} samples, {len(view.curves[key].x):,} distinct thresholds; tune {tune_s:.2f} s, view and widget {build_s:.2f} s')
    for name, ms in (('ours (binary search in the tuner curve)', ours), ('baseline (numpy rescan of the scores)', base)):
        print(f'  {name:42s} per move: median {np.median(ms):6.2f} ms, p95 {np.percentile(ms, 95):6.2f} ms, max {ms.max():6.2f} ms')
    print(f'  the lookup alone (counts and metrics at t): ours {lookups["ours"]:.1f} us, baseline {lookups["baseline"]:.1f} us '
          f'({lookups["baseline"] / lookups["ours"]:.0f}x)')
    print(f'  ratio baseline / ours (median): {np.median(base) / np.median(ours):.1f}x; '
          f'budget 50 ms per move: {"met" if np.percentile(ours, 95) < 50 else "NOT met"} (p95 {np.percentile(ours, 95):.2f} ms)')


if __name__ == '__main__':
    main()
