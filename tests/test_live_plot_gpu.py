"""GPU check of the live training plot (skipped without CUDA): between its frames it never syncs the device.

A callback just before the plot turns `torch.cuda.set_sync_debug_mode('error')` on for the plot's `on_batch_end`
(another, just after, turns it off again), so any host sync the plot made per batch would raise. With frames far
apart the fit runs through; with a frame due at every batch the plot reads its on-device sums, which syncs, and
raises: the check can fail."""
import numpy as np
import pandas as pd
import pytest
import torch

from dnn_cool import BinaryClassificationTask, BoundedRegressionTask, Callback, FlowDataset, Project, Trainer
from dnn_cool.views.training import LivePlot

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


class SyncErrors(Callback):
    "Sync debug mode `mode` from this callback's turn in `on_batch_end` on."
    def __init__(self, order, mode): self.order, self.mode = order, mode
    def on_batch_end(self, *args): torch.cuda.set_sync_debug_mode(self.mode)


def _trainer(plot):
    project = Project([BinaryClassificationTask('a'), BoundedRegressionTask('b', 0, 1)])
    @project.add_flow
    def toy(flow, x, out):
        out += flow.a(x.f)
        out += flow.b(x.f) | out.a
        return out
    g = np.random.default_rng(0)
    x = g.normal(size=(512, 8)).astype(np.float32)
    labels = pd.DataFrame({'a': x[:, 0] > 0, 'b': 1 / (1 + np.exp(-x[:, 1]))})
    labels.loc[~labels['a'], 'b'] = None
    ds = FlowDataset(toy, {'f': x}, labels)
    model = toy.torch(in_features={'f': 8})
    return Trainer(model, toy.get_loss(), torch.optim.Adam(model.parameters(), 1e-2), ds.loader(32), ds.loader(128), epochs=2,
                   device='cuda', progress=False, train_metrics=False,
                   callbacks=[plot, SyncErrors(LivePlot.order - 1, 'error'), SyncErrors(LivePlot.order + 1, 0)])


def test_live_plot_syncs_only_when_it_draws():
    try:
        plot = LivePlot(sink=lambda frame: None, every=3600)  # frames at the start, each epoch's end, the end: none per batch
        _trainer(plot).fit()
        assert plot.frames == 1 + 2 + 1
        eager = LivePlot(sink=lambda frame: None, every=1e-9, budget=1.0)  # a frame due at every batch: it reads the sums
        with pytest.raises(RuntimeError, match='synchroniz'):
            _trainer(eager).fit()
    finally: torch.cuda.set_sync_debug_mode(0)
