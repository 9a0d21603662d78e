"""`dnn_cool.tensorboard` on the synthetic walkthrough: a short run with a small CNN on uint8 images, read back with
TensorBoard's `EventAccumulator` and compared with the `History` and with `best_worst_inputs`."""
import io

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter

import dnn_cool.losses  # noqa: F401
import dnn_cool.module  # noqa: F401
from dnn_cool.data import FlowDataset
from dnn_cool.interpret import BestWorst, best_worst_inputs
from dnn_cool.synthetic import make_synthetic, synthetic_project
from dnn_cool.tensorboard import TensorBoardLogger, log_best_worst
from dnn_cool.core import seed_everything
from dnn_cool.train import Callback, Checkpoint, FlowNet, Trainer


def read_events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={'scalars': 0, 'images': 0, 'tensors': 0})
    acc.Reload()
    return acc


def text_at(acc, tag, step):
    ev = next(e for e in acc.Tensors(f'{tag}/text_summary') if e.step == step)
    return tensor_util.make_ndarray(ev.tensor_proto).item().decode()


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())

    def forward(self, image):  # (bs, 3, 64, 64) uint8 -> (bs, 128)
        return self.net(image.float() / 255)


def _image_run(n_train, n_valid, seed):
    "The walkthrough flow on synthetic images (train / valid from seeds `seed`, `seed + 1`) and a seeded tiny CNN."
    flow = synthetic_project().flows['full_flow']
    train, valid = make_synthetic(n_train, seed=seed), make_synthetic(n_valid, seed=seed + 1)
    train_ds = FlowDataset(flow, {'image': train.images}, train.labels)
    valid_ds = FlowDataset(flow, {'image': valid.images}, valid.labels)
    seed_everything(0)
    return flow, train_ds, valid_ds, FlowNet(TinyCNN(), flow.torch(in_features={'features': 128}), input_key='image')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    flow, train_ds, valid_ds, net = _image_run(96, 48, seed=0)
    log_dir = tmp_path_factory.mktemp('tb')
    logger = TensorBoardLogger(log_dir, flow, best_worst_loader=valid_ds.loader(20, shuffle=True),
                               dataset_inputs=valid_ds.inputs['image'], n=4, best_worst_every=2, batch_loss_every=2)
    trainer = Trainer(net, flow.get_loss(), torch.optim.Adam(net.parameters(), lr=3e-3), train_ds.loader(32, shuffle=True),
                      valid_ds.loader(24), flow=flow, epochs=3, callbacks=[logger], progress=False)
    history = trainer.fit()
    return dict(flow=flow, net=net, history=history, acc=read_events(log_dir), valid_ds=valid_ds)


BINARY = ['loss', 'accuracy', 'f1_score', 'precision', 'recall']
REGRESSION = ['loss', 'mean_absolute_error', 'root_mean_squared_error', 'r2_score', 'mean_absolute_error_normalised']
FACE, BODY = 'person_regression.face_regression', 'person_regression.body_regression'
METRICS_BY_TASK = {  # the walkthrough's 14 tasks and the metrics of their kinds, written out by hand
    'camera_blocked': BINARY, 'door_open': BINARY, 'door_locked': BINARY, 'person_present': BINARY,
    **{f'{FACE}.{c}': REGRESSION for c in ('face_x1', 'face_y1', 'face_w', 'face_h')},
    f'{FACE}.facial_characteristics': ['loss', 'subset_accuracy', 'f1_score', 'precision', 'recall'],
    **{f'{BODY}.{c}': REGRESSION for c in ('body_x1', 'body_y1', 'body_w', 'body_h')},
    f'{BODY}.shirt_type': ['loss', 'accuracy_1', 'accuracy_3', 'accuracy_5', 'f1_score', 'precision', 'recall']}
EXPECTED_TAGS = {'lr/0', 'train/loss', 'valid/loss', 'train_batch/loss'} | {
    f'{split}/{path}/{metric}' for split in ('train', 'valid') for path, ms in METRICS_BY_TASK.items() for metric in ms}


def test_scalars_equal_the_history(run):
    acc, history = run['acc'], run['history']
    assert len(METRICS_BY_TASK) == 14 and len(EXPECTED_TAGS) == 4 + 2 * (4 * 5 + 8 * 5 + 5 + 7)
    assert set(acc.Tags()['scalars']) == EXPECTED_TAGS
    record_key = {'train/loss': 'train_loss', 'valid/loss': 'valid_loss'}  # the History's names of the totals
    for tag in EXPECTED_TAGS - {'train_batch/loss'}:
        values = history[record_key.get(tag, tag)]
        want = [(e, v) for e, v in enumerate(values) if not np.isnan(v)]  # a NaN metric is not written
        events = acc.Scalars(tag)
        assert [ev.step for ev in events] == [e for e, _ in want], tag
        for ev, (_, v) in zip(events, want):
            assert ev.value == pytest.approx(v, rel=1e-6, abs=1e-12), tag


def test_batch_losses(run):
    steps = [e.step for e in run['acc'].Scalars('train_batch/loss')]
    assert steps == [2, 4, 6, 8]  # 3 batches per epoch, 3 epochs, every 2nd
    assert all(np.isfinite(e.value) for e in run['acc'].Scalars('train_batch/loss'))


def test_best_worst_images_and_tables(run):
    acc, flow, valid_ds = run['acc'], run['flow'], run['valid_ds']
    final = best_worst_inputs(run['net'], valid_ds.loader(48), flow, n=4)
    images = valid_ds.inputs['image']
    for p in flow.graph.paths:
        for kind in ('best', 'worst'):
            events = acc.Images(f'{kind}/{p}')
            assert [e.step for e in events] == [1, 2], (p, kind)  # every 2nd epoch, and the last
            indices = getattr(final[p], f'{kind}_indices')
            grid = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)))  # (64, 64 * k, 3)
            assert grid.shape == (64, 64 * len(indices), 3)
            for r, i in enumerate(indices):
                np.testing.assert_array_equal(grid[:, 64 * r:64 * (r + 1)], images[i].permute(1, 2, 0).numpy())
            table = text_at(acc, f'{kind}/{p}', 2)
            assert f'of {final[p].num_samples} counted samples' in table
            for r, (i, loss) in enumerate(zip(indices, getattr(final[p], f'{kind}_losses'))):
                assert f'| {r + 1} | {i} | {float(loss):.6g} |' in table, (p, kind, table)


def test_flow_summary_logged(run):
    ev = run['acc'].Tensors('flow/text_summary')[0]
    text = tensor_util.make_ndarray(ev.tensor_proto).item().decode()
    assert 'person_regression (TaskFlow)' in text and 'face_x1' in text


def test_log_best_worst_non_image_tensor_and_empty(tmp_path):
    result = {'a': BestWorst('a', np.array([2, 0]), np.array([0.5, 1.0]), np.array([0, 2]), np.array([1.0, 0.5]), 3),
              'b': BestWorst('b', np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0), 0)}
    inputs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.5, 6.25]])
    with SummaryWriter(str(tmp_path)) as w:
        assert log_best_worst(w, result, inputs, step=7) == ['best/a', 'worst/a']
        log_best_worst(w, result, None, step=8)
    acc = read_events(tmp_path)
    assert acc.Tags()['images'] == []
    table = text_at(acc, 'best/a', 7)
    assert '| 1 | 2 | 0.5 | [5.5 6.25] |' in table and '| 2 | 0 | 1 | [1. 2.] |' in table, table
    assert '| input |' not in text_at(acc, 'best/a', 8)


def test_float_images_in_unit_range_kept(tmp_path):
    imgs = torch.rand(3, 1, 4, 4)
    result = {'a': BestWorst('a', np.array([1]), np.array([0.1]), np.array([2]), np.array([0.9]), 3)}
    with SummaryWriter(str(tmp_path)) as w: log_best_worst(w, result, imgs, step=0)
    grid = np.asarray(Image.open(io.BytesIO(read_events(tmp_path).Images('best/a')[0].encoded_image_string)))
    np.testing.assert_array_equal(grid[:, :, 0], (imgs[1, 0].numpy() * 255).clip(0, 255).astype(np.uint8))


def test_inputs_requiring_grad_or_on_a_gpu_are_shown(tmp_path):
    result = {'a': BestWorst('a', np.array([1]), np.array([0.5]), np.array([0]), np.array([1.0]), 2)}
    inputs = torch.tensor([[1.0, 2.0], [3.0, 4.5]], requires_grad=True)
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    with SummaryWriter(str(tmp_path)) as w:
        for step, device in enumerate(devices): log_best_worst(w, result, inputs.to(device), step=step)
    acc = read_events(tmp_path)
    for step in range(len(devices)):
        assert '| 1 | 1 | 0.5 | [3. 4.5] |' in text_at(acc, 'best/a', step)


def test_best_worst_after_restoring_the_best_epoch(tmp_path):
    """A scripted monitor makes epoch 0 the best of three; with restore_best the logger ranks the restored model again,
    at step 3, and its images and tables are those of `best_worst_inputs` on the model `fit` leaves."""
    flow, train_ds, valid_ds, net = _image_run(64, 40, seed=2)
    snaps = []

    class Scripted(Callback):
        def on_epoch_end(self, trainer, epoch, record):
            record['valid_loss'] = [1.0, 2.0, 3.0][epoch]
            snaps.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    logger = TensorBoardLogger(tmp_path, flow, best_worst_loader=valid_ds.loader(16), dataset_inputs=valid_ds.inputs['image'], n=3)
    trainer = Trainer(net, flow.get_loss(), torch.optim.Adam(net.parameters(), lr=1e-2), train_ds.loader(16, shuffle=True),
                      valid_ds.loader(40), flow=flow, epochs=3, callbacks=[logger, Scripted(), Checkpoint(restore_best=True)],
                      progress=False)
    trainer.fit()
    assert trainer.restored_epoch == 0
    for k, v in net.state_dict().items(): assert torch.equal(v, snaps[0][k]), k
    acc, images = read_events(tmp_path), valid_ds.inputs['image']
    restored = best_worst_inputs(net, valid_ds.loader(16), flow, n=3)  # the same batches: the same float sums
    changed = False
    for p in flow.graph.paths:
        for kind in ('best', 'worst'):
            events = acc.Images(f'{kind}/{p}')
            indices = getattr(restored[p], f'{kind}_indices')
            if len(indices) == 0: continue  # the task counted no sample
            assert [e.step for e in events] == [0, 1, 2, 3], (p, kind)
            grid = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)))  # (64, 64 * k, 3)
            assert grid.shape == (64, 64 * len(indices), 3)
            for r, i in enumerate(indices):
                np.testing.assert_array_equal(grid[:, 64 * r:64 * (r + 1)], images[i].permute(1, 2, 0).numpy())
            table = text_at(acc, f'{kind}/{p}', 3)
            for r, (i, loss) in enumerate(zip(indices, getattr(restored[p], f'{kind}_losses'))):
                assert f'| {r + 1} | {i} | {float(loss):.6g} |' in table, (p, kind, table)
            changed |= text_at(acc, f'{kind}/{p}', 2) != table
    assert changed  # the last epoch's model ranked differently: the test can tell the two apart
