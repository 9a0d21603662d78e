"""DDP with PyTorch's own engine, 2 gloo processes on the CPU against 1 process (tests/distributed_worker.py runs
both ways): the masked per-task loss normalised by the global count gives the single-process gradient even when the
processes hold very different numbers of labels; the Trainer runs unchanged under torchrun and gives the same epochs;
evaluation tables, tuning inputs and best/worst samples gathered over the processes equal those of one process, also
when one process's shard holds no batch or no label of a task; a loss computed on one process alone returns (it
makes no collective unless asked)."""
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
    hung = done.stderr.find('Timeout (')  # a worker's deadline passed: faulthandler printed where each thread waited
    assert done.returncode == 0, done.stdout[-3000:] + (done.stderr[hung:hung + 5000] if hung >= 0 else done.stderr[-3000:])
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


def test_trainer_trains_with_global_counts_and_gives_the_setting_back(runs):
    "The Trainer's first DDP step has the single-process gradient: it turned the counts over all processes on."
    single, pair = runs
    for r in pair:
        for run in (r['trained'], r['explicit'][True]):
            for k, g in single['trained']['first_grads'].items():
                torch.testing.assert_close(run['first_grads'][k], g, atol=1e-6, rtol=0, msg=k)
        assert r['trained']['global_counts_after'] is None and r['explicit'][True]['global_counts_after'] is True
        assert r['trained']['warnings'] == r['explicit'][True]['warnings'] == []


def test_trainer_keeps_an_explicit_false_and_warns_once(runs):
    single, pair = runs
    ref = single['explicit'][False]['first_grads']
    for r in pair:
        got = r['explicit'][False]
        assert got['global_counts_after'] is False
        error = max((got['first_grads'][k] - g).abs().max().item() for k, g in ref.items())
        print(f"\nrank {r['rank']}: largest first-step gradient error with global_counts=False: {error:.3g}")
        assert error > 1e-2, error  # this process's counts: not the single-process gradient
    assert single['explicit'][False]['warnings'] == []  # nothing to warn about in one process
    assert [len(r['explicit'][False]['warnings']) for r in pair] == [1, 0]  # once, on rank 0
    assert 'global_counts=False under DDP (2 processes)' in pair[0]['explicit'][False]['warnings'][0]


def test_loss_on_one_process_alone_returns_with_its_own_counts(runs):
    "Rank 0 computes a loss and backpropagates while rank 1 waits: no collective, the numbers of one process alone."
    single, pair = runs
    ref, got = single['one_process_loss'], pair[0]['one_process_loss']
    assert pair[1]['one_process_loss'] is None  # rank 1 never computed it
    torch.testing.assert_close(got['loss'], ref['loss'], atol=1e-6, rtol=0)
    torch.testing.assert_close(got['counts'], ref['counts'], atol=0, rtol=0)
    for k, g in ref['grads'].items(): torch.testing.assert_close(got['grads'][k], g, atol=1e-6, rtol=0, msg=k)


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


@pytest.mark.parametrize('case', ['empty_shard', 'no_label'])
def test_best_worst_when_a_process_has_no_candidate(runs, case):
    """Rank 1 reads no batch at all (1 sample, 2 processes), or no label of tasks b and r: every process still joins
    the gathering (the run returned before its deadline) and ends with one process's ranking of the whole set."""
    single, pair = runs
    ref = single['uneven_best_worst'][case]['ranked']
    if case == 'empty_shard': assert [r['uneven_best_worst'][case]['loader_batches'] for r in pair] == [1, 0]
    for r in pair:
        got = r['uneven_best_worst'][case]['ranked']
        pd.testing.assert_frame_equal(pd.DataFrame(got['rows']), pd.DataFrame(ref['rows']), check_exact=False, rtol=1e-6)
        assert got['num_samples'] == ref['num_samples'] and got['indices'] == ref['indices']
        torch.testing.assert_close(got['inputs'], ref['inputs'], atol=0, rtol=0)
        torch.testing.assert_close(got['predicted_index'], ref['predicted_index'])
    if case == 'no_label':
        assert ref['num_samples']['b'] > 3 and ref['num_samples']['r'] > 3  # rank 0's labels fill the lists
