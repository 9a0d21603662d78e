"""dnn_cool.explanations and dnn_cool.interpret on the walkthrough flow (14 tasks, nested flows).

Explanations: heads set by hand so that every decoded value is known in advance.
Interpretation: against a brute force that loops over samples one at a time, writes each task's loss formula and the
ground-truth masking rule out by hand (never calling FlowLoss), and sorts."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch.utils.data import DataLoader, Sampler

import dnn_cool.losses  # noqa: F401  (flow.get_loss())
import dnn_cool.module  # noqa: F401  (flow.torch())
from dnn_cool.data import FlowDataset
from dnn_cool.explanations import explain, explain_batch, render_html, render_text
from dnn_cool.interpret import BestWorst, best_worst_inputs
from dnn_cool.synthetic import (BOOL_TASKS, BOX_COLUMNS, FACIAL_CHARACTERISTICS, SHIRT_NAMES, make_synthetic,
                                synthetic_project)

FLOW = synthetic_project().flows['full_flow']
FACE = 'person_regression.face_regression.'
BODY = 'person_regression.body_regression.'
BOX_BIAS = {'x1': 0.0, 'y1': -1.0, 'w': 1.0, 'h': 2.0}  # sigmoid(bias) * 64 is the decoded box value


# ---------------------------------------------------------------------------------------------------------------
# Explanations

def hand_set_model():
    """Features [blocked, open, person, locked]: each binary head reads its own feature (logit +-4); the person heads
    read nothing, so their biases alone fix their outputs."""
    model = FLOW.torch(in_features={'features': 4}).eval()
    def set_head(path, weight, bias):
        head = model.head(path)
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(head.weight.shape))
            head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(head.bias.shape))
    for j, name in enumerate(['camera_blocked', 'door_open', 'person_present', 'door_locked']):
        set_head(name, 8 * torch.eye(4)[j], -4.0)
    for prefix, part in ((FACE, 'face'), (BODY, 'body')):
        for coord, bias in BOX_BIAS.items(): set_head(f'{prefix}{part}_{coord}', torch.zeros(4), bias)
    set_head(FACE + 'facial_characteristics', torch.zeros(3, 4), [3.0, -3.0, 3.0])  # smiling, bearded
    set_head(BODY + 'shirt_type', torch.zeros(7, 4), torch.arange(7.0))  # ranking: the last class first
    return model

BLOCKED, PERSON, LOCKED, EMPTY_ROOM = [1., 0, 0, 0], [0., 1, 1, 0], [0., 0, 0, 1], [0., 1, 0, 0]


@pytest.fixture(scope='module')
def batch_outputs():
    model = hand_set_model()
    with torch.no_grad(): return model({'features': torch.tensor([BLOCKED, PERSON, LOCKED, EMPTY_ROOM])})


def test_blocked_camera_shows_only_camera_blocked(batch_outputs):
    tree = explain(FLOW, batch_outputs, 0)
    assert len(tree.children) == 1
    only = tree.children[0]
    assert (only.name, only.kind, only.decoded.item(), only.children) == ('camera_blocked', 'task', True, [])
    assert render_text(tree) == 'inp 0\n└── camera_blocked | decoded: True, activated: 0.982, logits: 4.0'


def test_branches_follow_the_decoded_cascade(batch_outputs):
    kids = lambda i: [c.name for c in explain(FLOW, batch_outputs, i).children]
    assert kids(1) == ['camera_blocked', 'door_open', 'person_present', 'person_regression']  # door open: not locked
    assert kids(2) == ['camera_blocked', 'door_open', 'door_locked']  # door closed: no person
    assert kids(3) == ['camera_blocked', 'door_open', 'person_present']  # nobody in the doorway


def test_nested_flows_in_definition_order(batch_outputs):
    tree = explain(FLOW, batch_outputs, 1)
    person = tree.find('person_regression')
    assert person.kind == 'flow'
    assert [c.name for c in person.children] == ['face_regression', 'body_regression']
    assert [c.name for c in person.children[0].children] == ['face_x1', 'face_y1', 'face_w', 'face_h', 'facial_characteristics']
    assert [c.name for c in person.children[1].children] == ['body_x1', 'body_y1', 'body_w', 'body_h', 'shirt_type']
    shown_tasks = [n.path for n in tree.walk() if n.kind == 'task']
    assert shown_tasks == [p for p in FLOW.graph.paths if p != 'door_locked']  # the graph's order, minus the cut task


def test_values_equal_the_module_outputs(batch_outputs):
    for i in range(4):
        tree = explain(FLOW, batch_outputs, i)
        for node in tree.walk():
            if node.kind != 'task': continue
            for key in ('decoded', 'activated', 'logits'):
                np.testing.assert_array_equal(getattr(node, key), batch_outputs[key][node.path][i].numpy())
    tree = explain(FLOW, batch_outputs, 1)
    for part in ('face', 'body'):
        for coord, bias in BOX_BIAS.items():  # hand-computed: 64 * sigmoid(bias)
            path = f'{FACE if part == "face" else BODY}{part}_{coord}'
            assert tree.find(path).decoded.item() == pytest.approx(64 / (1 + np.exp(-bias)), rel=1e-6)


def test_names_shown(batch_outputs):
    tree = explain(FLOW, batch_outputs, 1)
    shirt, face = tree.find(BODY + 'shirt_type'), tree.find(FACE + 'facial_characteristics')
    assert shirt.display == list(SHIRT_NAMES[::-1])
    assert face.display == [FACIAL_CHARACTERISTICS[0], FACIAL_CHARACTERISTICS[2]]
    text = render_text(tree)
    assert f"shirt_type | decoded: [{', '.join(SHIRT_NAMES[::-1])}]" in text
    assert f'facial_characteristics | decoded: [{FACIAL_CHARACTERISTICS[0]}, {FACIAL_CHARACTERISTICS[2]}]' in text


def test_text_tree_shape(batch_outputs):
    lines = render_text(explain(FLOW, batch_outputs, 1), precision=3).splitlines()
    names = [line.split(' | ')[0] for line in lines]
    assert names == [
        'inp 1',
        '├── camera_blocked',
        '├── door_open',
        '├── person_present',
        '└── person_regression',
        '    ├── face_regression',
        '    │   ├── face_x1',
        '    │   ├── face_y1',
        '    │   ├── face_w',
        '    │   ├── face_h',
        '    │   └── facial_characteristics',
        '    └── body_regression',
        '        ├── body_x1',
        '        ├── body_y1',
        '        ├── body_w',
        '        ├── body_h',
        '        └── shirt_type']
    assert lines[1] == '├── camera_blocked | decoded: False, activated: 0.018, logits: -4.0'
    assert lines[6] == '    │   ├── face_x1 | decoded: 32.0, activated: 0.5, logits: 0.0'


def test_show_hidden_keeps_everything_marked(batch_outputs):
    tree = explain(FLOW, batch_outputs, 0, show_hidden=True)
    tasks = [n for n in tree.walk() if n.kind == 'task']
    assert [n.path for n in tasks] == FLOW.graph.paths
    assert [n.path for n in tasks if not n.hidden] == ['camera_blocked']
    assert all(n.hidden for n in tree.walk() if n.kind == 'flow' and n.path)
    text = render_text(tree)
    assert '└── person_regression [hidden]' in text and 'door_open [hidden] | decoded: ' in text
    assert 'color:#999' in render_html(tree)


def test_json_and_html(batch_outputs):
    tree = explain(FLOW, batch_outputs, 1)
    d = json.loads(json.dumps(tree.to_dict()))
    assert d['sample'] == 1 and d['kind'] == 'flow'
    shirt = d['children'][3]['children'][1]['children'][4]
    assert shirt['path'] == BODY + 'shirt_type' and shirt['decoded'] == [6, 5, 4, 3, 2, 1, 0]
    page = tree._repr_html_()
    assert page.count('<details') == page.count('</details>') == 4  # root, person, face, body
    assert '<script' not in page and 'shirt_type' in page


def test_explain_batch_reports_dataset_indices():
    data = make_synthetic(64, seed=3, missing_fraction=0.0, noise_pixels=0)
    lab = data.labels
    feats = torch.tensor(np.stack([lab[c].fillna(False).to_numpy(bool) for c in
                                   ('camera_blocked', 'door_open', 'person_present', 'door_locked')], 1), dtype=torch.float32)
    ds = FlowDataset(FLOW, {'features': feats}, lab)
    model = hand_set_model().train()
    x, y = next(iter(ds.loader(batch_size=20, shuffle=True, generator=torch.Generator().manual_seed(0))))
    trees = explain_batch(model, (x, y), FLOW)
    assert model.training
    assert [t.sample for t in trees] == x['_index'].tolist()
    for t in trees:  # the hand-set model decodes every label right, so the tree follows the sample's own labels
        row = lab.iloc[t.sample]
        expected = ['camera_blocked']
        if not row.camera_blocked:
            expected += ['door_open'] + (['person_present'] if row.door_open else ['door_locked'])
            if row.door_open and row.person_present: expected += ['person_regression']
        assert [c.name for c in t.children] == expected, t.sample


# ---------------------------------------------------------------------------------------------------------------
# Interpretation

N = 300

@pytest.fixture(scope='module')
def interp_setup():
    data = make_synthetic(N, seed=7)  # 5% of labels dropped at random
    feats = torch.randn(N, 8, generator=torch.Generator().manual_seed(0))
    ds = FlowDataset(FLOW, {'features': feats}, data.labels)
    torch.manual_seed(0)
    model = FLOW.torch(in_features={'features': 8})
    with torch.no_grad():  # larger weights spread the losses out
        for p in model.parameters(): p.mul_(3)
    return ds, data.labels, model


def brute_force(model, labels, ds, order):
    """`{path: [(loss, index), ...]}` sorted, over the samples in `order` whose label is present and whose preconditions
    hold in the labels; each sample on its own, every formula and rule written out."""
    model.eval()
    out = {p: [] for p in FLOW.graph.paths}
    known = lambda v: not pd.isna(v)
    for i in order:
        row = labels.iloc[i]
        with torch.no_grad(): lo = {p: v[0] for p, v in model({'features': ds.inputs['features'][i:i + 1]})['logits'].items()}
        door_applies = known(row.camera_blocked) and not row.camera_blocked
        applies = {'camera_blocked': True, 'door_open': door_applies,
                   'door_locked': door_applies and known(row.door_open) and not row.door_open,
                   'person_present': door_applies and known(row.door_open) and bool(row.door_open)}
        person = applies['person_present'] and known(row.person_present) and bool(row.person_present)
        for name in BOOL_TASKS:
            if applies[name] and known(row[name]):
                out[name].append((float(F.binary_cross_entropy_with_logits(lo[name], torch.tensor(float(row[name])))), i))
        if not person: continue
        for col in BOX_COLUMNS:
            path = (FACE if col.startswith('face') else BODY) + col
            if known(row[col]): out[path].append((float((torch.sigmoid(lo[path]) - row[col] / 64) ** 2), i))
        fc = row.facial_characteristics
        if fc is not None:
            path = FACE + 'facial_characteristics'
            out[path].append((float(F.binary_cross_entropy_with_logits(lo[path], torch.tensor(fc, dtype=torch.float32))), i))
        if known(row.shirt_type):
            path = BODY + 'shirt_type'
            out[path].append((float(F.cross_entropy(lo[path][None], torch.tensor([int(row.shirt_type)]))), i))
    return {p: sorted(v) for p, v in out.items()}


def assert_matches(result, reference, n):
    assert list(result) == FLOW.graph.paths
    for p, ref in reference.items():
        bw = result[p]
        assert isinstance(bw, BestWorst) and bw.path == p
        assert bw.num_samples == len(ref), p
        k = min(n, len(ref))
        np.testing.assert_allclose(bw.best_losses, [l for l, _ in ref[:k]], rtol=1e-5, atol=1e-6, err_msg=p)
        np.testing.assert_allclose(bw.worst_losses, [l for l, _ in ref[::-1][:k]], rtol=1e-5, atol=1e-6, err_msg=p)
        loss_of = {i: l for l, i in ref}
        for idx, loss in zip(np.r_[bw.best_indices, bw.worst_indices], np.r_[bw.best_losses, bw.worst_losses]):
            assert int(idx) in loss_of, (p, idx)  # masked-out samples never appear
            assert loss == pytest.approx(loss_of[int(idx)], rel=1e-5, abs=1e-6)  # ties are fine if the losses match
        assert bw.best_indices.dtype == np.int64 and len(set(bw.best_indices.tolist())) == k


def test_best_worst_shuffled_loader(interp_setup):
    ds, labels, model = interp_setup
    loader = ds.loader(batch_size=37, shuffle=True, generator=torch.Generator().manual_seed(5))
    result = best_worst_inputs(model, loader, FLOW, n=6)
    assert_matches(result, brute_force(model, labels, ds, range(N)), 6)
    df = result.to_frame()
    assert list(df.columns) == ['task_path', 'kind', 'rank', 'index', 'loss']
    assert len(df) == sum(len(bw.best_indices) + len(bw.worst_indices) for bw in result.values())


class ScatteredSubset(Sampler):
    """Yields batches of a subset of the dataset in a scrambled order, uneven sizes: a sampler like no other."""
    def __init__(self, indices, sizes): self.indices, self.sizes = list(indices), sizes
    def __iter__(self):
        start = 0
        for j in range(len(self.indices)):
            size = self.sizes[j % len(self.sizes)]
            if start >= len(self.indices): return
            yield self.indices[start:start + size]
            start += size
    def __len__(self): return len(self.indices)


def test_best_worst_custom_sampler(interp_setup):
    ds, labels, model = interp_setup
    subset = np.random.default_rng(0).permutation(N)[:170].tolist()
    loader = DataLoader(ds, sampler=ScatteredSubset(subset, [1, 50, 7, 33]), batch_size=None)
    result = best_worst_inputs(model, loader, FLOW, n=5)
    assert_matches(result, brute_force(model, labels, ds, subset), 5)
    assert set(result['camera_blocked'].worst_indices.tolist()) <= set(subset)


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), batch_size=st.integers(1, 120), seed=st.integers(0, 2 ** 16))
def test_best_worst_any_n_and_batching(interp_setup, n, batch_size, seed):
    ds, labels, model = interp_setup
    loader = ds.loader(batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    assert_matches(best_worst_inputs(model, loader, FLOW, n=n), brute_force_cached(interp_setup), n)


_CACHE = {}
def brute_force_cached(setup):
    if 'all' not in _CACHE: _CACHE['all'] = brute_force(setup[2], setup[1], setup[0], range(N))
    return _CACHE['all']
