"""Shared test data (a plain module, not a conftest: tests/browser/conftest.py would shadow it): the walkthrough flow over random feature vectors, with some labels missing one by one; a small toy flow for the trainer and checkpoint tests."""
import numpy as np
import pandas as pd
import torch

from dnn_cool.data import FlowDataset
from dnn_cool.flow import Project
from dnn_cool.tasks import BinaryClassificationTask, BoundedRegressionTask, ClassificationTask
from dnn_cool.synthetic import make_synthetic, synthetic_project

FACIAL = 'person_regression.face_regression.facial_characteristics'


def walkthrough_features(n: int, seed: int, features: int, partial_rows: int):
    """`(flow, dataset)`: a fresh walkthrough flow (its own task objects, thresholds at 0.5) and `n` synthetic label rows
    with random `features`-dim inputs; `partial_rows` labelled samples lose one facial label each."""
    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(n, seed=seed)
    g = torch.Generator().manual_seed(0)
    ds = FlowDataset(flow, {'features': torch.randn(n, features, generator=g)}, data.labels)
    fc = ds.targets[FACIAL]  # (n, 3)
    rows = np.flatnonzero(~fc[:, 0].isnan().numpy())[:partial_rows]
    fc[rows, np.arange(len(rows)) % 3] = float('nan')
    return flow, ds


def known(a: np.ndarray, value: bool) -> np.ndarray:
    "Label present and equal to `value`."
    return ~np.isnan(a) & (a == float(value))


def toy_flow():
    "is_positive; kind and size where it is positive."
    project = Project([BinaryClassificationTask('is_positive'), ClassificationTask('kind', num_classes=3),
                       BoundedRegressionTask('size', 0, 10)])

    @project.add_flow
    def toy(flow, x, out):
        out += flow.is_positive(x.features)
        out += flow.kind(x.features) | out.is_positive
        out += flow.size(x.features) | out.is_positive
        return out
    return toy


def toy_data(flow, n, seed=0, missing=0.1):
    "`n` rows: x (n, 8) normal; is_positive = x0 > 0, kind = argmax x1..3, size = 10 sigmoid(2 x4); `missing` of each label dropped."
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 8)).astype(np.float32)
    positive = x[:, 0] > 0
    labels = pd.DataFrame({'is_positive': pd.array(positive, dtype='boolean'),
                           'kind': pd.array(x[:, 1:4].argmax(1), dtype='Int64'),
                           'size': 10 / (1 + np.exp(-2 * x[:, 4].astype(np.float64)))})
    labels.loc[~positive, ['kind', 'size']] = None
    drop = g.random((n, 3)) < missing
    for j, c in enumerate(labels.columns): labels.loc[drop[:, j], c] = None
    return FlowDataset(flow, {'features': torch.from_numpy(x)}, labels)
