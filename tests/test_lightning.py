"""dnn_cool.lightning: a flow trained by `lightning.Trainer` keeps what dnn_cool's Trainer gives.

One CPU fit, shared by several tests: the validation metrics it logs equal `evaluate()` on the validation loader;
`tune()` works after it with no argument; a Lightning checkpoint written after tuning restores the weights and the
thresholds into a fresh model of the same flow (and rebuilds the module from the file alone); the live figure and
the best and worst inputs in TensorBoard. Then a subclass that overrides `configure_optimizers` and `training_step`,
a diverging fit, `import dnn_cool` without Lightning, and DDP on two CPU processes (tests/lightning_worker.py):
the weights after one SGD step equal one process's on the whole batch, the validation metrics equal one process's
(Lightning's repeated samples left out), and with the counts of each process alone (`global_counts=False`) they do
not.
"""
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

L = pytest.importorskip('lightning')

from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask, FlowModule,  # noqa: E402
                      NonFiniteLossError, NonFiniteLossWarning, Project, evaluate, load_checkpoint, read_checkpoint)
from dnn_cool.lightning import FlowLightningModule, FlowLivePlot, TensorBoardBestWorst, TuneThresholds  # noqa: E402
from walkthrough import toy_data  # noqa: E402  (the shared toy data: is_positive, kind, size, 10% of each label missing)

WORKER = Path(__file__).with_name('lightning_worker.py')
REPO = Path(__file__).resolve().parents[1]


def toy_flow():
    project = Project([BinaryClassificationTask('is_positive'), ClassificationTask('kind', num_classes=3),
                       BoundedRegressionTask('size', 0, 10)])

    @project.add_flow
    def details(flow, x, out):
        out += flow.kind(x.features)
        out += flow.size(x.features)
        return out

    @project.add_flow
    def toy(flow, x, out):
        out += flow.is_positive(x.features)
        out += flow.details(x.features) | out.is_positive
        return out
    return toy



def cpu_trainer(**kwargs):
    kwargs = {'accelerator': 'cpu', 'devices': 1, 'enable_progress_bar': False, 'enable_model_summary': False,
              'log_every_n_steps': 1, 'logger': False, 'enable_checkpointing': False, **kwargs}
    return L.Trainer(**kwargs)


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger('lightning.pytorch').setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', '.*does not have many workers.*')
        yield


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    "Three epochs on 384 samples, validated on 200, with a checkpoint per epoch, TensorBoard, the live figure, best/worst."
    logging.getLogger('lightning.pytorch').setLevel(logging.WARNING)
    warnings.filterwarnings('ignore', '.*does not have many workers.*')
    tmp = tmp_path_factory.mktemp('lightning')
    flow = toy_flow()
    train, valid = toy_data(flow, 384, seed=0), toy_data(flow, 200, seed=1)
    L.seed_everything(0, verbose=False)
    model = flow.torch(in_features={'features': 8})
    module = FlowLightningModule(model, optimizer=lambda params: torch.optim.Adam(params, lr=0.05))
    frames = []
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp / 'ckpt', filename='{epoch}', save_top_k=-1)
    best_worst = TensorBoardBestWorst(dataset_inputs='features', n=3)
    trainer = L.Trainer(accelerator='cpu', devices=1, max_epochs=3, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1,
                        logger=L.pytorch.loggers.TensorBoardLogger(tmp, name='toy'),
                        callbacks=[checkpoints, FlowLivePlot(sink=frames.append, every=1e-3), best_worst])
    valid_loader = valid.loader(64)
    trainer.fit(module, train.loader(64, shuffle=True), valid_loader)
    return dict(flow=flow, model=model, module=module, trainer=trainer, valid=valid, valid_loader=valid_loader,
                tmp=tmp, frames=frames, best_worst=best_worst)


def test_logged_validation_metrics_equal_evaluate(fitted):
    flow, trainer = fitted['flow'], fitted['trainer']
    ev = evaluate(fitted['model'], fitted['valid_loader'], flow)
    assert set(ev.task_path) == set(flow.graph.paths)
    record, logged = fitted['module'].history.records[-1], trainer.callback_metrics
    for row in ev.itertuples():
        key = f'valid/{row.task_path}/{row.metric_name}'
        assert record[key] == pytest.approx(row.metric_res, abs=1e-6), key
        assert logged[key].item() == pytest.approx(row.metric_res, abs=1e-6), key
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={'scalars': 0}).Reload()
    scalars = set(events.Tags()['scalars'])
    for row in ev.itertuples():  # every task's metrics, every epoch, in the logger
        key = f'valid/{row.task_path}/{row.metric_name}'
        assert len(events.Scalars(key)) == 3, key
        assert events.Scalars(key)[-1].value == pytest.approx(row.metric_res, abs=1e-6), key
    assert {f'train/{p}/loss' for p in flow.graph.paths} <= scalars and {'train_loss', 'valid_loss'} <= scalars


def test_tune_without_arguments_then_checkpoint_restores_weights_and_thresholds(fitted):
    flow, model, trainer, tmp = fitted['flow'], fitted['model'], fitted['trainer'], fitted['tmp']
    results = flow.get_decoder().tune(min_per_class=0)
    assert set(results) == {'is_positive'} and results.source.startswith('the first validation loader of the last Lightning fit')
    tuned = flow.get_decoder().thresholds()
    assert tuned['is_positive'] != 0.5
    path = tmp / 'tuned.ckpt'
    trainer.save_checkpoint(path)
    fresh_flow = toy_flow()
    fresh = fresh_flow.torch(in_features={'features': 8})
    load_checkpoint(fresh, path)
    assert fresh_flow.get_decoder().thresholds() == tuned
    for k, v in model.state_dict().items(): torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)
    rebuilt = FlowModule.from_checkpoint(path)
    assert rebuilt.flow.get_decoder().thresholds() == tuned
    x, _ = fitted['valid'][torch.arange(50)]
    with torch.no_grad(): a, b = model.eval()(x), rebuilt(x)
    for p in flow.graph.paths: torch.testing.assert_close(b['decoded'][p], a['decoded'][p])
    assert torch.load(path, weights_only=True)['pytorch-lightning_version'] == L.__version__


def test_model_checkpoint_files_read_as_dnn_cool_checkpoints(fitted):
    ckpt = read_checkpoint(fitted['tmp'] / 'ckpt' / 'epoch=1.ckpt')
    assert ckpt['epoch'] == 1 and [r['epoch'] for r in ckpt['history']] == [0, 1]  # written as epoch 1 ended
    assert ckpt['thresholds'] == {'is_positive': 0.5}  # the thresholds of then: tuning came later
    assert ckpt['meta']['module_prefix'] == '' and set(ckpt['state_dict']) == set(fitted['model'].state_dict())


def test_live_plot_and_best_worst_inputs(fitted):
    frames, flow = fitted['frames'], fitted['flow']
    assert frames and frames[-1].status.startswith('done: 3 epochs')
    assert all(p.rpartition('.')[2] in frames[-1].svg for p in flow.graph.paths)
    assert fitted['module'].flow_callbacks == []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(fitted['trainer'].logger.log_dir, size_guidance={'tensors': 0}).Reload()
    assert {f'{k}/{p}/text_summary' for k in ('best', 'worst') for p in flow.graph.paths} <= set(events.Tags()['tensors'])
    assert len(fitted['best_worst'].result['details.size'].worst_indices) == 3


def test_a_subclass_keeps_the_per_task_logging():
    flow = toy_flow()
    train, valid = toy_data(flow, 192, seed=2), toy_data(flow, 64, seed=3)

    class Regularised(FlowLightningModule):
        def configure_optimizers(self): return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.penalty = 1e-3 * sum(p.pow(2).sum() for p in self.model.parameters())
            return loss + self.penalty

    module = Regularised(flow.torch(in_features={'features': 8}), train_metrics=False)
    trainer = cpu_trainer(max_epochs=2)
    trainer.fit(module, train.loader(64), valid.loader(64))
    assert type(trainer.optimizers[0]).__name__ == 'SGD'
    for record in module.history.records:
        for p in flow.graph.paths: assert f'train/{p}/loss' in record and f'valid/{p}/loss' in record
        assert not any(k.startswith('train/') and not k.endswith('/loss') for k in record)  # train_metrics=False
    for key in ('train/details.kind/loss', 'valid/details.kind/accuracy_1', 'valid/is_positive/f1_score', 'lr/0'):
        assert key in trainer.callback_metrics, key


def test_a_diverging_fit_stops_naming_the_task_and_the_step():
    flow = toy_flow()
    train, valid = toy_data(flow, 192, seed=4), toy_data(flow, 64, seed=5)
    counted = train.gt_value['is_positive'] & train.gt_available['is_positive'] & ~train.targets['details.size'].isnan()
    i = 64 + int(counted[64:128].nonzero()[0])  # in the second batch of 64
    train.targets['details.size'][i] = float('inf')  # (NaN would be a missing label)
    module = FlowLightningModule(flow.torch(in_features={'features': 8}))
    with pytest.raises(NonFiniteLossError, match=r"training in epoch 0: the loss of task 'details.size' is not finite "
                                                 r"\(NaN or inf\), first at step 2 \(batch 2 of the epoch\)") as caught:
        cpu_trainer(max_epochs=3).fit(module, train.loader(64), valid.loader(64))
    assert (caught.value.task, caught.value.step, caught.value.epoch) == ('details.size', 2, 0)
    assert caught.value.history is module.history and len(module.history) == 0
    stopping = FlowLightningModule(flow.torch(in_features={'features': 8}), on_nonfinite='stop')
    with pytest.warns(NonFiniteLossWarning, match="task 'details.size' is not finite"):
        cpu_trainer(max_epochs=3).fit(stopping, train.loader(64), valid.loader(64))
    assert len(stopping.history) == 1  # the epoch it diverged in was the last


def test_dnn_cool_imports_without_lightning_and_the_module_names_the_extra():
    code = ("import sys; sys.modules['lightning'] = None\n"  # as if Lightning were not installed
            "import dnn_cool\n"
            "try: import dnn_cool.lightning\n"
            "except ModuleNotFoundError as e: print('refused:', e)\n")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: dnn_cool.lightning needs PyTorch Lightning, an optional extra of dnn_cool: pip install " \
           "'dnn_cool[lightning]'" in done.stdout


def run_worker(out: Path, devices: int):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    done = subprocess.run([sys.executable, str(WORKER), '--out', str(out), '--devices', str(devices)], env=env,
                          capture_output=True, text=True, timeout=420, cwd=REPO)
    hung = done.stderr.find('Timeout (')  # a process's deadline passed: faulthandler printed where each thread waited
    assert done.returncode == 0, done.stdout[-3000:] + (done.stderr[hung:hung + 5000] if hung >= 0 else done.stderr[-3000:])
    return [torch.load(out / f'rank{r}.pt', weights_only=False) for r in range(devices)]


@pytest.fixture(scope='module')
def ddp_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('lightning_ddp')
    (single,), pair = run_worker(tmp / 'single', 1), run_worker(tmp / 'pair', 2)
    assert single['global']['world_size'] == 1 and [r['global']['world_size'] for r in pair] == [2, 2]
    return single, pair


def test_ddp_step_equals_one_process_on_the_whole_batch(ddp_runs):
    single, pair = ddp_runs
    for r in pair:
        for k, v in single['global']['initial'].items():
            torch.testing.assert_close(r['global']['initial'][k], v, rtol=0, atol=0)
        assert max((r['global']['state'][k] - v).abs().max().item() for k, v in single['global']['initial'].items()) > 1e-2
        for k, v in single['global']['state'].items():
            torch.testing.assert_close(r['global']['state'][k], v, rtol=0, atol=1e-6, msg=k)
        assert r['global']['warnings'] == [] and r['global']['global_counts_after'] is None


def test_ddp_epoch_records_equal_one_process(ddp_runs):
    "Training and validation records (two validation loaders, with Lightning's repeats left out) equal one process's."
    single, pair = ddp_runs
    ref = single['global']['record']
    assert any(k.startswith('valid_1/') for k in ref) and any(k.startswith('train/') for k in ref)
    for r in pair:
        got = r['global']['record']
        assert got.keys() == ref.keys()
        for k, v in ref.items(): assert got[k] == pytest.approx(v, abs=1e-6, nan_ok=True), k
    assert [r['global']['repeats'] for r in pair] == [{0: 0, 1: 0}, {0: 16, 1: 1}]  # a whole batch; one sample
    for r in pair: assert r['global']['sync_dist_advice'] == []  # the values logged are gathered already: no advice
    assert single['global']['repeats'] == {0: 0, 1: 0}


def test_ddp_tune_on_rank_zero_alone_reads_the_whole_validation_set(ddp_runs):
    single, pair = ddp_runs
    assert pair[0]['tuned'] == single['tuned'] and pair[1]['tuned'] is None


def test_ddp_with_each_process_counts_differs_and_warns_once(ddp_runs):
    "What the global counts fix: with global_counts=False the step is not one process's on the whole batch."
    single, pair = ddp_runs
    ref = single['local']['state']  # one process: its own counts are all the counts
    for k, v in single['global']['state'].items(): torch.testing.assert_close(ref[k], v, rtol=0, atol=1e-6)
    for r in pair:
        error = max((r['local']['state'][k] - v).abs().max().item() for k, v in ref.items())
        assert error > 1e-2, error
        assert r['local']['global_counts_after'] is False
    assert [len(r['local']['warnings']) for r in pair] == [1, 0]
    assert 'global_counts=False under DDP (2 processes)' in pair[0]['local']['warnings'][0]
