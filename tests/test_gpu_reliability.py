"""GPU checks of the reliability layer (skipped without CUDA): the trainer's non-finite tracking adds no host sync to
a training step, a diverged run is still caught on the device, and checkpoints save and resume on CUDA.

Run on a machine with a GPU: `pytest -q tests/test_gpu_reliability.py tests/test_gpu.py`."""
import math

import pandas as pd
import pytest
import torch

from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask, FlowDataset,
                      MultilabelClassificationTask, NonFiniteLossError, Project, Trainer)
from dnn_cool.checkpoint import read_checkpoint
from dnn_cool.core import to_device
from dnn_cool.train import Callback

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def flow_and_batches(n_batches=6, bs=64):
    project = Project([BinaryClassificationTask('blocked', pos_weight=3.0), ClassificationTask('shirt', num_classes=4),
                       MultilabelClassificationTask('face', num_labels=3, threshold=[0.3, 0.5, 0.7]),
                       BoundedRegressionTask('x', 0, 64)])

    @project.add_flow
    def full(flow, x, out):
        out += flow.blocked(x.f)
        out += flow.shirt(x.f) | ~out.blocked
        out += flow.face(x.f) | ~out.blocked
        out += flow.x(x.f)
        return out
    n = n_batches * bs
    g = torch.Generator().manual_seed(0)
    labels = pd.DataFrame({'blocked': (torch.rand(n, generator=g) < 0.3).numpy(),
                           'shirt': torch.randint(0, 4, (n,), generator=g).numpy(),
                           'face': list((torch.rand(n, 3, generator=g) < 0.5).numpy().astype(int)),
                           'x': (torch.rand(n, generator=g) * 64).numpy()})
    ds = FlowDataset(full, {'f': torch.randn(n, 32, generator=g)}, labels)
    batches = [to_device(ds[list(range(i * bs, (i + 1) * bs))], 'cuda') for i in range(n_batches)]  # already on the GPU
    return full, ds, batches


class SyncGuard(Callback):
    "Every step between the first and the last of each epoch runs with `set_sync_debug_mode('error')`."
    def __init__(self, n_batches): self.n = n_batches
    def on_batch_end(self, trainer, step, outputs, targets, bd):
        in_epoch = step - trainer._epoch_first_step + 1
        if in_epoch == 1: torch.cuda.synchronize(); torch.cuda.set_sync_debug_mode('error')
        if in_epoch == self.n - 1: torch.cuda.set_sync_debug_mode('default')  # the epoch end syncs, once, by design
    def on_fit_end(self, trainer): torch.cuda.set_sync_debug_mode('default')


def test_training_steps_with_nonfinite_tracking_never_sync():
    flow, _, batches = flow_and_batches()
    model = flow.torch(in_features={'f': 32}).cuda()
    t = Trainer(model, flow.get_loss(), torch.optim.SGD(model.parameters(), lr=0.05), batches, epochs=2, device='cuda',
                progress=False, callbacks=[SyncGuard(len(batches))])
    try: h = t.fit()
    finally: torch.cuda.set_sync_debug_mode('default')
    assert all(math.isfinite(v) for v in h['train_loss'])


def test_a_diverged_run_is_caught_on_the_gpu():
    flow, _, batches = flow_and_batches()
    model = flow.torch(in_features={'f': 32}).cuda()

    class Poison(Callback):
        def on_batch_end(self, trainer, step, outputs, targets, bd):
            if step == 2:
                with torch.no_grad(): trainer.model.head('x').bias.fill_(float('nan'))
    t = Trainer(model, flow.get_loss(), torch.optim.SGD(model.parameters(), lr=0.05), batches, epochs=2, device='cuda',
                progress=False, callbacks=[Poison(), SyncGuard(len(batches))])
    with pytest.raises(NonFiniteLossError, match="task 'x' is not finite .*first at step 3"):
        try: t.fit()
        finally: torch.cuda.set_sync_debug_mode('default')


def test_checkpoints_save_and_resume_on_cuda(tmp_path):
    flow, ds, _ = flow_and_batches()

    def make():
        torch.manual_seed(0)
        model = flow.torch(in_features={'f': 32})
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        return Trainer(model, flow.get_loss(), opt, ds.loader(64, shuffle=True), ds.loader(128), epochs=3, device='cuda',
                       scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, 0.5), seed=0, progress=False)
    whole = make().fit()

    class Stop(Callback):
        def on_epoch_end(self, trainer, epoch, record): trainer.stop_training = epoch == 0
    first = make()
    first.callbacks.append(Stop())
    first.callbacks.sort(key=lambda cb: cb.order)
    from dnn_cool.train import Checkpoint
    first.callbacks.append(Checkpoint(last_path=tmp_path / 'last.pt'))
    first.fit()
    assert read_checkpoint(tmp_path / 'last.pt')['epoch'] == 0
    resumed = make().fit(resume_from=tmp_path / 'last.pt')
    assert len(resumed) == 3
    for a, b in zip(whole['valid_loss'], resumed['valid_loss']): assert b == pytest.approx(a, rel=1e-4)  # GPU kernels may differ in the last bits
