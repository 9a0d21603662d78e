"""What the live training plot costs: the walkthrough's fit with and without it, side by side, in one run.

The fit is `python -m dnn_cool demo`'s (synthetic scenes, `SyntheticBackbone`, AdamW with one-cycle, the same
seed; TensorBoard logging left out, so the plot is compared with the fit alone). Outside a notebook the plot is
forced on (`LivePlot(sink=...)`) with a sink that still builds every frame and serialises it as the kernel would
send it (`json.dumps` of the frame's mime bundle); only the sending over the wire is left out. Runs alternate
(without, with, with, without, ...) so that drifts of a shared machine fall on both. Each fit is timed in wall
seconds and in CPU seconds of this process (which other processes' load disturbs much less), and the time spent
inside the plot's own hooks is measured around each call: that is the plot's cost without the machine's noise.

    python benchmarks/bench_live_plot.py                          # the walkthrough's size: 5000 train, 6 epochs
    python benchmarks/bench_live_plot.py --n-train 1000 --epochs 2 --repeats 1
    python benchmarks/bench_live_plot.py --device cuda            # on a GPU, where each read is a device sync
"""
import argparse
import json
import os
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')
import numpy as np
import torch

from dnn_cool.data import FlowDataset
from dnn_cool.demo import SyntheticBackbone, WalkthroughConfig
from dnn_cool.synthetic import make_synthetic, synthetic_project
from dnn_cool.train import FlowNet, Trainer
from dnn_cool.views.training import LivePlot


class TimedLivePlot(LivePlot):
    "A LivePlot that adds up the time (wall and CPU) spent in each of its hooks."
    hook_seconds = hook_cpu = 0.0
    def _timed(name):
        def hook(self, *args):
            t0, c0 = time.perf_counter(), time.process_time()
            try: return getattr(LivePlot, name)(self, *args)
            finally: self.hook_seconds, self.hook_cpu = self.hook_seconds + time.perf_counter() - t0, self.hook_cpu + time.process_time() - c0
        return hook
    on_fit_start, on_epoch_start, on_batch_end = _timed('on_fit_start'), _timed('on_epoch_start'), _timed('on_batch_end')
    on_epoch_end, on_fit_end = _timed('on_epoch_end'), _timed('on_fit_end')


def fit(c: WalkthroughConfig, data, flow, device: str, plot: LivePlot | None) -> tuple[float, float]:
    "Wall and CPU seconds of `Trainer.fit()` of the walkthrough, with `plot` or without any."
    torch.manual_seed(c.seed)
    n = c.n_train + c.n_valid
    ds = {k: FlowDataset(flow, {'image': data.images[s]}, data.labels.iloc[s].reset_index(drop=True))
          for k, s in (('train', slice(0, c.n_train)), ('valid', slice(c.n_train, n)))}
    backbone = SyntheticBackbone(width=c.width)
    model = FlowNet(backbone, flow.torch(in_features={'features': backbone.out_features}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=1e-4)
    train = ds['train'].loader(c.batch_size, shuffle=True, generator=torch.Generator().manual_seed(c.seed))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=c.lr, total_steps=c.epochs * len(train))
    trainer = Trainer(model, flow.get_loss(), optimizer, train, ds['valid'].loader(c.batch_size), flow=flow, epochs=c.epochs,
                      scheduler=scheduler, scheduler_interval='step', device=device, progress=False, seed=c.seed,
                      callbacks=[Checkpoint(restore_best=True), *([plot] if plot is not None else [])])
    if device.startswith('cuda'): torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit()
    if device.startswith('cuda'): torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--n-train', type=int, default=WalkthroughConfig.n_train)
    ap.add_argument('--n-valid', type=int, default=WalkthroughConfig.n_valid)
    ap.add_argument('--epochs', type=int, default=WalkthroughConfig.epochs)
    ap.add_argument('--repeats', type=int, default=2, help='pairs of fits (without, with), alternating in order')
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    c = WalkthroughConfig(n_train=args.n_train, n_valid=args.n_valid, n_test=0, epochs=args.epochs)
    data = make_synthetic(c.n_train + c.n_valid, seed=c.seed)
    flow = synthetic_project().flows['full_flow']

    times, cpu, plots = {'without': [], 'with': []}, {'without': [], 'with': []}, []
    for r in range(args.repeats):
        for variant in (('without', 'with') if r % 2 == 0 else ('with', 'without')):
            plot = None
            if variant == 'with':
                plot = TimedLivePlot(sink=lambda frame: json.dumps(frame._repr_mimebundle_()))  # built and serialised
                plots.append(plot)
            wall, cpu_s = fit(c, data, flow, args.device, plot)
            times[variant].append(wall); cpu[variant].append(cpu_s)
            print(f'  fit {variant:7s} the live plot: {wall:7.2f} s wall, {cpu_s:7.2f} s CPU'
                  + (f'  ({plot.frames} frames; in its hooks {plot.hook_seconds:.3f} s wall, {plot.hook_cpu:.3f} s CPU)' if plot else ''), flush=True)

    hooks, hooks_cpu = np.median([p.hook_seconds for p in plots]), np.median([p.hook_cpu for p in plots])
    frames = np.median([p.frames for p in plots])
    with_, with_cpu = np.median(times['with']), np.median(cpu['with'])
    print(f'walkthrough fit ({c.n_train} train, {c.n_valid} valid, {c.epochs} epochs, {args.device}), median of {args.repeats}:')
    for name, t in (('wall', times), ('CPU', cpu)):
        a, b = np.median(t['without']), np.median(t['with'])
        lo_a, lo_b = min(t['without']), min(t['with'])  # the least disturbed run of each
        print(f'  {name:4s} without the live plot {a:7.2f} s, with it {b:7.2f} s: ratio {b / a:.4f} ({100 * (b / a - 1):+.2f} %); '
              f'fastest runs {lo_a:.2f} s and {lo_b:.2f} s: ratio {lo_b / lo_a:.4f}')
    share, share_cpu = hooks / with_, hooks_cpu / with_cpu
    print(f'  inside the plot\'s hooks ({frames:.0f} frames): {hooks:.3f} s wall = {100 * share:.2f} % of the fit\'s wall time, '
          f'{hooks_cpu:.3f} s CPU = {100 * share_cpu:.2f} % of its CPU time (budget 2 %: {"met" if max(share, share_cpu) < 0.02 else "NOT met"})')


if __name__ == '__main__':
    main()
