"""Shared test data: the walkthrough flow over random feature vectors, with some labels missing one by one."""
import numpy as np
import torch

from dnn_cool.data import FlowDataset
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
