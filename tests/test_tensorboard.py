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
from dnn_cool.tensorboard import TensorBoardLogger, log_best_worst, record_scalars
from dnn_cool.train import FlowNet, Trainer, seed_everything


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


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    flow = synthetic_project().flows['full_flow']
    train, valid = make_synthetic(96, seed=0), make_synthetic(48, seed=1)
    train_ds = FlowDataset(flow, {'image': train.images}, train.labels)
    valid_ds = FlowDataset(flow, {'image': valid.images}, valid.labels)
    seed_everything(0)
    net = FlowNet(TinyCNN(), flow.torch(in_features={'features': 128}), input_key='image')
    log_dir = tmp_path_factory.mktemp('tb')
    logger = TensorBoardLogger(log_dir, flow, best_worst_loader=valid_ds.loader(20, shuffle=True),
                               dataset_inputs=valid_ds.inputs['image'], n=4, best_worst_every=2, batch_loss_every=2)
    trainer = Trainer(net, flow.get_loss(), torch.optim.Adam(net.parameters(), lr=3e-3), train_ds.loader(32, shuffle=True),
                      valid_ds.loader(24), flow=flow, epochs=3, callbacks=[logger], progress=False)
    history = trainer.fit()
    return dict(flow=flow, net=net, history=history, acc=read_events(log_dir), valid_ds=valid_ds)


def test_scalars_equal_the_history(run):
    acc, history = run['acc'], run['history']
    tags = set(acc.Tags()['scalars']) - {'train_batch/loss'}
    assert tags == set(record_scalars(history.records[-1])) | set(record_scalars(history.records[0]))
    nested = 'valid/person_regression.face_regression.face_x1/mean_absolute_error'
    for tag in [nested, 'train/loss', 'valid/loss', 'valid/camera_blocked/accuracy', 'valid/camera_blocked/loss',
                'train/person_regression.body_regression.shirt_type/accuracy_1']:
        assert tag in tags, tag
    for tag in tags:
        events = acc.Scalars(tag)
        want = [(e, r) for e, r in enumerate(history.records) if tag in record_scalars(r)]
        assert [ev.step for ev in events] == [e for e, _ in want], tag
        for ev, (_, r) in zip(events, want):
            assert ev.value == pytest.approx(record_scalars(r)[tag], rel=1e-6, abs=1e-12), tag
    assert acc.Scalars(nested)[-1].value == pytest.approx(
        history[nested][-1], rel=1e-6)


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
