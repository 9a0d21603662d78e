"""The deployed walkthrough model: PyTorch's eager eval forward against the `.pt2` program and onnxruntime.

The walkthrough's `FlowNet` (the synthetic CNN backbone and the 14 heads of `synthetic_project()`, with the cascade and
the decoders), exported by `export_flow` to both formats, then timed on the same uint8 images, batch 1 and 64:

- **eager** (the baseline): `model(batch)` in eval mode under `torch.inference_mode()`, the way a PyTorch service runs it.
- **.pt2**: `torch.export.load(path).module()` called on the batch dict, what `load_exported` runs for a `.pt2`.
- **onnxruntime**: a plain `onnxruntime.InferenceSession` on numpy arrays, inputs and outputs by the flow's names
  (what a service without dnn_cool runs); the session's graph optimisations at their default (all), as many intra-op
  threads as torch gets.
- **load_exported(.onnx)**: the same file through dnn_cool's wrapper (input checks, tensors back, outputs regrouped
  by kind), to show what the convenience costs.

The outputs are checked against eager first (decoded values and masks equal, floats within 1e-4). Times are medians
over rounds that alternate between the variants, so a noisy neighbour slows all of them alike; the ratio is each
variant's time over eager's in the same run (below 1: faster than eager).

usage: python benchmarks/bench_export.py [--batch-sizes 1,64] [--threads 1] [--rounds 7] [--seconds 0.5] [--width 32]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dnn_cool import FlowNet, export_flow, load_exported, synthetic_project
from dnn_cool.demo import SyntheticBackbone
from dnn_cool.export import KINDS, output_name


def build(width: int):
    torch.manual_seed(0)
    flow = synthetic_project().flows['full_flow']
    return flow, FlowNet(SyntheticBackbone(width), flow.torch(in_features={'features': 256})).eval()


def images(bs: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {'image': torch.randint(0, 256, (bs, 3, 64, 64), dtype=torch.uint8, generator=g)}


def check(flow, eager_out, flat: dict, what: str):
    "`flat` `{<path>/<kind>: array or tensor}` against the eager outputs."
    for kind in KINDS:
        for p in flow.graph.paths:
            got, want = torch.as_tensor(flat[output_name(p, kind)]), eager_out[kind][p]
            if want.is_floating_point(): torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
            else: assert torch.equal(got, want), (what, kind, p)


def time_per_call(f, seconds: float) -> float:
    "Seconds per call of `f`, over as many calls as fit in about `seconds` (at least 3)."
    f()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        f()
        n += 1
    return (time.perf_counter() - start) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch-sizes', default='1,64')
    ap.add_argument('--threads', type=int, default=1, help='torch threads and onnxruntime intra-op threads')
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--seconds', type=float, default=0.5, help='time spent per variant and round')
    ap.add_argument('--width', type=int, default=32, help='backbone width (the walkthrough: 32)')
    args = ap.parse_args()
    import onnxruntime
    torch.set_num_threads(args.threads)
    flow, model = build(args.width)
    work = Path(tempfile.mkdtemp(prefix='bench_export_'))
    start = time.perf_counter()
    pt2 = export_flow(model, images(8), work / 'walkthrough.pt2')
    onnx = export_flow(model, images(8), work / 'walkthrough.onnx')
    exported_in = time.perf_counter() - start
    program = torch.export.load(pt2).module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = onnxruntime.InferenceSession(str(onnx), options, providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    wrapped = load_exported(onnx)
    wrapped.session = session  # the same session options as the raw one

    print(f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, CPU, {args.threads} thread(s); walkthrough '
          f'FlowNet (width {args.width}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, '
          f'{len(flow.graph.paths)} tasks); both files exported in {exported_in:.1f} s; median of {args.rounds} rounds, ms per batch')
    print(f"{'batch':>5} {'eager':>9} {'.pt2':>9} {'onnxruntime':>12} {'load_exported':>14} "
          f"{'.pt2/eager':>11} {'ort/eager':>10} {'wrapped/eager':>14}")
    for bs in map(int, args.batch_sizes.split(',')):
        batch = images(bs, seed=bs)
        feeds = {'image': batch['image'].numpy()}
        with torch.inference_mode(): want = model(batch)
        with torch.inference_mode(): check(flow, want, program(batch), '.pt2')
        check(flow, want, dict(zip(names, session.run(None, feeds))), 'onnxruntime')
        got = wrapped(batch)
        check(flow, want, {output_name(p, k): got[k][p] for k in KINDS for p in flow.graph.paths}, 'load_exported')

        def eager():
            with torch.inference_mode(): model(batch)
        def pt2_program():
            with torch.inference_mode(): program(batch)
        variants = {'eager': eager, 'pt2': pt2_program, 'ort': lambda: session.run(None, feeds), 'wrapped': lambda: wrapped(batch)}
        times = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, f in variants.items(): times[k].append(time_per_call(f, args.seconds))
        t = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{bs:>5} {t['eager']:>9.3f} {t['pt2']:>9.3f} {t['ort']:>12.3f} {t['wrapped']:>14.3f} "
              f"{t['pt2'] / t['eager']:>10.2f}x {t['ort'] / t['eager']:>9.2f}x {t['wrapped'] / t['eager']:>13.2f}x", flush=True)


if __name__ == '__main__':
    main()
