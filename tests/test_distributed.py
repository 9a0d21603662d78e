"""DDP with PyTorch's own engine, 2 gloo processes on the CPU against 1 process (tests/distributed_worker.py runs
both ways): the masked per-task loss normalised by the global count gives the single-process gradient even when the
processes hold very different numbers of labels; the Trainer runs unchanged under torchrun and gives the same epochs;
evaluation tables, tuning inputs and best/worst samples gathered over the processes equal those of one process."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

WORKER = Path(__file__).with_name('distributed_worker.py')


def run(out: Path, nproc: int):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    cmd = [sys.executable, str(WORKER), '--out', str(out)]
    if nproc > 1: cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', *cmd[1:]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f'rank{r}.pt', weights_only=False) for r in range(nproc)]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ddp')
    (single,), pair = run(tmp / 'single', 1), run(tmp / 'pair', 2)
    assert single['world_size'] == 1 and pair[0]['world_size'] == 2
    return single, pair


def test_gradients_equal_the_single_process_full_batch(runs):
    single, pair = runs
    for r in pair:  # DDP leaves the same averaged gradient on every process
        for k, g in single['grads']['global'].items():
            torch.testing.assert_close(r['grads']['global'][k], g, atol=1e-6, rtol=0, msg=k)
    local_error = max((pair[0]['grads']['local'][k] - g).abs().max().item() for k, g in single['grads']['global'].items())
    print(f"\nlargest gradient error with per-process normalisation: {local_error:.3g}")
    assert local_error > 1e-2  # what the global counts fix: task b's labels are 15 on one process, 1 on the other


def test_trainer_runs_unchanged_under_torchrun(runs):
    single, pair = runs
    for key in ('trained', 'weighted'):
        ref, got = single[key], pair[0][key]
        assert len(got['records']) == len(ref['records']) == 2
        for a, b in zip(got['records'], ref['records']):
            assert a.keys() == b.keys()
            for k in a: assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), (key, k)
        for k, v in ref['state'].items():
            torch.testing.assert_close(got['state'][k], v, atol=1e-5, rtol=1e-4, msg=k)
            torch.testing.assert_close(pair[1][key]['state'][k], got['state'][k], atol=0, rtol=0, msg=k)  # ranks agree
        for k, v in ref['loss_state'].items():  # the learned loss weights too: DDP averaged their gradients
            torch.testing.assert_close(got['loss_state'][k], v, atol=1e-5, rtol=1e-4, msg=k)
            torch.testing.assert_close(pair[1][key]['loss_state'][k], got['loss_state'][k], atol=0, rtol=0, msg=k)


def test_evaluation_gathered_over_processes(runs):
    single, pair = runs
    ref = single['evaluation']
    for r in pair:
        got = r['evaluation']
        for table in ('evaluate', 'evaluate_predictions', 'best_worst'):
            pd.testing.assert_frame_equal(pd.DataFrame(got[table]), pd.DataFrame(ref[table]), check_exact=False, rtol=1e-6)
        torch.testing.assert_close(got['index'], ref['index'])
        assert got['thresholds'] == ref['thresholds']
