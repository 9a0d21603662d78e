"""Deployed flows against the eager eval forward: `.pt2` and `.onnx` files of the README's flow, the walkthrough's
`FlowNet` (CNN backbone and 14 heads) and a flow with every predefined task type, at batch sizes 1 to 300, with
tuned thresholds (per label too) that a 0.5 decode would contradict; loaded in a separate process that never defines
the flow, and run by raw onnxruntime; a root precondition that is always true or always false; `torch.compile`;
the command line. One export per format and model, shared by the tests (module-scoped fixtures)."""
import inspect
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
import torch.nn as nn

from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask, FlowDataset, FlowNet,
                      Project, decoder_thresholds, evaluate, export_flow, load_exported, make_synthetic, save_checkpoint,
                      set_decoder_thresholds, synthetic_project)
from dnn_cool.demo import SyntheticBackbone
from dnn_cool.export import KINDS, output_name
from dnn_cool.tasks import is_tunable, threshold_labels
from test_checkpoint import every_type_batch, every_type_flow

BATCH_SIZES = (1, 2, 7, 64, 300)
FORMATS = ('.pt2', '.onnx')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def readme_flow():
    "The README's flow, as the README writes it."
    project = Project([BinaryClassificationTask('camera_blocked'), BinaryClassificationTask('obj_exists'),
                       ClassificationTask('obj_class', labels=['cat', 'dog', 'kite'])] +
                      [BoundedRegressionTask(name, low=0, high=64) for name in ['obj_x', 'obj_y', 'obj_w', 'obj_h']])

    @project.add_flow
    def localize_flow(flow, x, out):
        out += flow.obj_exists(x.features)
        out += flow.obj_x(x.features) | out.obj_exists
        out += flow.obj_y(x.features) | out.obj_exists
        out += flow.obj_w(x.features) | out.obj_exists
        out += flow.obj_h(x.features) | out.obj_exists
        out += flow.obj_class(x.features) | out.obj_exists
        return out

    @project.add_flow
    def full_flow(flow, x, out):
        out += flow.camera_blocked(x.cam_features)
        out += flow.localize_flow(x.localization_features) | (~out.camera_blocked)
        return out
    return full_flow


def readme_batch(bs, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'cam_features': torch.randn(bs, 16, generator=g), 'localization_features': torch.randn(bs, 32, generator=g)}


def image_batch(bs, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'image': torch.randint(0, 256, (bs, 3, 64, 64), dtype=torch.uint8, generator=g)}


def same(got, want, what):
    "Booleans and ids exactly; floats (logits, activated values, regressions) within 1e-4."
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    if want.is_floating_point(): torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4, msg=lambda m: f'{what}: {m}')
    else: assert torch.equal(got, want), (what, (got != want).sum().item())


def assert_outputs_equal(got, want, paths, what):
    "`got` has every kind of output the eager `want` has (a loaded file: exactly those), equal as `same` says."
    assert set(KINDS) <= set(got), (what, list(got))
    for kind in KINDS:
        assert list(got[kind]) == list(paths), (what, kind)
        for p in paths: same(got[kind][p], want[kind][p], f'{what} {kind} {p}')


def tune_thresholds(flow, model, batch):
    """Thresholds at the 30th / 70th percentile of each tunable task's (each label's) activations on `batch`, so
    that deciding at 0.5 would give other answers; returns them, set on `flow`."""
    with torch.no_grad(): activated = model(batch)['activated']
    tuned = {}
    for i, node in enumerate(n for n in flow.graph.nodes if is_tunable(n.task)):
        a, q = activated[node.path].double(), 0.3 if i % 2 else 0.7
        if threshold_labels(node.task) is None: tuned[node.path] = round(float(a.quantile(q)), 4)
        else: tuned[node.path] = [round(float(a[:, j].quantile((q + 0.2 * j) % 1)), 4) for j in range(a.shape[1])]
    set_decoder_thresholds(flow, tuned)
    return tuned


@dataclass
class Case:
    name: str
    model: nn.Module
    flow: object
    batches: dict  # batch size -> inputs
    tuned: dict  # task path -> tuned threshold(s)
    eager: dict = field(default_factory=dict)  # batch size -> the eager eval outputs, at the tuned thresholds
    files: dict = field(default_factory=dict)  # '.pt2' / '.onnx' -> path


def build_case(name):
    torch.manual_seed(0)
    if name == 'readme':
        flow = readme_flow()
        model, make = flow.torch(readme_batch(2)), readme_batch
    elif name == 'walkthrough':
        flow = synthetic_project().flows['full_flow']
        model, make = FlowNet(SyntheticBackbone(), flow.torch(in_features={'features': 256})), image_batch
    else:
        flow = every_type_flow()
        model, make = flow.torch(every_type_batch(2)), lambda bs, seed=0: every_type_batch(bs, seed)
    model.eval()
    batches = {bs: make(bs, seed=bs) for bs in BATCH_SIZES}
    return Case(name, model, flow, batches, tune_thresholds(flow, model, batches[300]))


_exported = {}  # name -> Case: each model is exported once per format for the whole module


def exported_case(name, tmp_path_factory) -> Case:
    "A model with tuned thresholds, its eager outputs at every batch size, and its two exported files."
    if name not in _exported:
        c = build_case(name)
        with torch.no_grad(): c.eager = {bs: c.model(b) for bs, b in c.batches.items()}
        folder = tmp_path_factory.mktemp(c.name)
        for suffix in FORMATS: c.files[suffix] = export_flow(c.model, c.batches[7], folder / f'{c.name}{suffix}')
        _exported[name] = c
    return _exported[name]


@pytest.fixture(scope='module', params=['readme', 'walkthrough', 'every_type'])
def case(request, tmp_path_factory):
    return exported_case(request.param, tmp_path_factory)


def tree_rows(tree):
    "An explanation tree's paths and discrete answers (class names, booleans, ids): what must match exactly."
    return [(n.path, n.display if n.display is not None or n.decoded is None else n.decoded.tolist())
            for n in tree.walk() if n.decoded is None or n.decoded.dtype.kind in 'biu']


LOADER = r'''
"""Loads exported files and runs them: no flow is defined here, only dnn_cool is imported."""
import sys
import torch
from dnn_cool import explain, load_exported
TREE_ROWS
inputs = torch.load(sys.argv[1])
results = {}
for path in sys.argv[3:]:
    f = load_exported(path)
    outputs = {bs: f(batch) for bs, batch in inputs.items()}
    tree = explain(f.flow, outputs[7], 0)
    results[path] = {'outputs': outputs, 'summary': f.flow.summary(), 'thresholds': f.thresholds, 'tree': tree_rows(tree)}
torch.save(results, sys.argv[2])
'''.replace('TREE_ROWS', inspect.getsource(tree_rows))


@pytest.fixture(scope='module')
def deployed(case, tmp_path_factory):
    "What a separate process gets from the files: `{suffix: {'outputs': {bs: ...}, 'summary', 'thresholds', 'tree'}}`."
    folder = tmp_path_factory.mktemp(f'{case.name}_loaded')
    torch.save(case.batches, folder / 'inputs.pt')
    (folder / 'loader.py').write_text(LOADER)
    run = subprocess.run([sys.executable, 'loader.py', 'inputs.pt', 'results.pt', *map(str, case.files.values())],
                         cwd=folder, capture_output=True, text=True, timeout=600, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    results = torch.load(folder / 'results.pt')
    return {suffix: results[str(path)] for suffix, path in case.files.items()}


@pytest.mark.parametrize('suffix', FORMATS)
def test_deployed_outputs_equal_eager(case, deployed, suffix):
    "Every batch size, every task and kind: decoded values and masks exactly, logits and activated values within 1e-4."
    got = deployed[suffix]['outputs']
    for bs in BATCH_SIZES:
        assert list(got[bs]) == list(KINDS)
        assert_outputs_equal(got[bs], case.eager[bs], case.flow.graph.paths, f'{case.name}{suffix} bs={bs}')


def test_the_tuned_thresholds_decide(case, deployed):
    "The files decode with the tuned thresholds, per label too, where 0.5 would give other answers."
    activated = case.eager[300]['activated']
    for suffix in FORMATS:
        assert deployed[suffix]['thresholds'] == decoder_thresholds(case.flow)
        decoded = deployed[suffix]['outputs'][300]['decoded']
        for path, t in case.tuned.items():
            t = torch.tensor(t)
            assert torch.equal(decoded[path], activated[path] >= t), (suffix, path)
            assert not torch.equal(decoded[path], activated[path] >= 0.5), (path, t)  # the test would notice 0.5


def test_the_flow_comes_back_from_the_file(case, deployed):
    "The separate process rebuilt the flow (structure, thresholds) and explained a sample as the eager model's flow does."
    from dnn_cool import explain
    expected = tree_rows(explain(case.flow, case.eager[7], 0))
    for suffix in FORMATS:
        assert deployed[suffix]['summary'] == case.flow.summary()
        assert deployed[suffix]['tree'] == expected


def test_raw_onnxruntime_with_the_flows_names(case):
    "The .onnx file alone: inputs named after the batch keys, outputs `<task path>/<kind>`, the eager values."
    session = onnxruntime.InferenceSession(str(case.files['.onnx']), providers=['CPUExecutionProvider'])
    batch = case.batches[7]
    assert [i.name for i in session.get_inputs()] == list(batch)
    names = [output_name(p, kind) for kind in KINDS for p in case.flow.graph.paths]
    assert [o.name for o in session.get_outputs()] == names
    values = session.run(None, {k: v.numpy() for k, v in batch.items()})
    for name, value in zip(names, values):
        path, kind = name.rsplit('/', 1)
        same(torch.from_numpy(value), case.eager[7][kind][path], name)
    meta = json.loads(session.get_modelmeta().custom_metadata_map['dnn_cool'])
    assert meta['thresholds'] == decoder_thresholds(case.flow) and meta['flow']['name'] == case.flow.name


@pytest.mark.parametrize('suffix', FORMATS)
def test_inputs_that_dont_fit_are_refused(case, suffix):
    f = load_exported(case.files[suffix])
    batch = case.batches[2]
    key = list(batch)[-1]
    shape = tuple(batch[key].shape[1:])
    expected = '(batch, ' + ', '.join(map(str, shape)) + ')'
    with pytest.raises(KeyError, match=f"reads input '{key}' {expected.replace('(', '[(]').replace(')', '[)]')}"):
        f({k: v for k, v in batch.items() if k != key})
    wrong = torch.zeros(2, *shape[:-1], shape[-1] + 1, dtype=batch[key].dtype)
    given = str(tuple(wrong.shape))
    with pytest.raises(ValueError) as e: f({**batch, key: wrong})
    assert f"input '{key}' has shape {given}; the file expects {expected}" in str(e.value)


def test_evaluate_on_the_deployed_walkthrough(tmp_path_factory):
    "A FlowDataset's batches (with `gt`) through the deployed file: the same evaluation table as the eager model's."
    c = exported_case('walkthrough', tmp_path_factory)
    data = make_synthetic(96, seed=1)
    dataset = FlowDataset(c.flow, {'image': data.images}, data.labels)
    f = load_exported(c.files['.onnx'])
    for mode in ('gt', 'pred'):
        want = evaluate(c.model, dataset.loader(32), mode=mode)
        got = evaluate(f, dataset.loader(32), flow=f.flow, mode=mode)
        pd.testing.assert_frame_equal(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('blocked', [True, False])
def test_root_precondition_always_true_or_false(tmp_path, blocked):
    """README flow whose camera is always (never) blocked: nothing (everything) under localize_flow applies, in both
    files as in eager mode."""
    torch.manual_seed(0)
    flow = readme_flow()
    model = flow.torch(readme_batch(2)).eval()
    with torch.no_grad():
        head = model.head('camera_blocked')
        head.weight.zero_(); head.bias.fill_(20.0 if blocked else -20.0)
    batch = readme_batch(64, seed=3)
    with torch.no_grad(): want = model(batch)
    pre = want['predicted_precondition']
    under = [p for p in flow.graph.paths if p.startswith('localize_flow.')]
    assert bool(want['decoded']['camera_blocked'].all()) is blocked
    if blocked: assert not any(pre[p].any() for p in under)
    else:
        assert pre['localize_flow.obj_exists'].all()
        assert torch.equal(pre['localize_flow.obj_x'], want['decoded']['localize_flow.obj_exists'])
    for suffix in FORMATS:
        f = load_exported(export_flow(model, readme_batch(5), tmp_path / f'm{suffix}'))
        for bs in (1, 64):
            b = readme_batch(bs, seed=3)
            with torch.no_grad(): expected = model(b)
            assert_outputs_equal(f(b), expected, flow.graph.paths, f'{suffix} bs={bs}')


def test_compiled_eval_forward_matches_eager():
    "torch.compile(fullgraph=True) of a fresh module's eval forward: one graph, the eager numbers at any batch size."
    torch.manual_seed(0)
    flow = readme_flow()
    set_decoder_thresholds(flow, {'camera_blocked': 0.3, 'localize_flow.obj_exists': 0.6})
    model = flow.torch(readme_batch(2)).eval()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for bs in (2, 7, 300):
        batch = readme_batch(bs, seed=bs)
        with torch.no_grad(): got, want = compiled(batch), model(batch)
        assert_outputs_equal(got, want, flow.graph.paths, f'compiled bs={bs}')


def test_command_line_exports_a_checkpoint(tmp_path):
    "`python -m dnn_cool export CHECKPOINT OUT.onnx`: the module rebuilt without code, its thresholds, the eager outputs."
    torch.manual_seed(0)
    flow = readme_flow()
    model = flow.torch(readme_batch(2)).eval()
    tuned = tune_thresholds(flow, model, readme_batch(300))
    save_checkpoint(tmp_path / 'best.pt', model)
    run = subprocess.run([sys.executable, '-m', 'dnn_cool', 'export', 'best.pt', 'model.onnx'], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith('wrote model.onnx') and "flow='full_flow', tasks=7" in run.stdout, run.stdout
    f = load_exported(tmp_path / 'model.onnx')
    assert {p: f.thresholds[p] for p in tuned} == tuned
    batch = readme_batch(7, seed=1)
    with torch.no_grad(): want = model(batch)
    assert_outputs_equal(f(batch), want, flow.graph.paths, 'cli')
    # a model around its flow module can't be rebuilt from the file: one line, status 1
    save_checkpoint(tmp_path / 'net.pt', FlowNet(nn.Linear(4, 16), model, input_key='cam_features'))
    run = subprocess.run([sys.executable, '-m', 'dnn_cool', 'export', 'net.pt', 'net.onnx'], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env=ENV)
    assert run.returncode == 1 and 'holds a model around its flow module' in run.stderr, run.stderr
    assert not (tmp_path / 'net.onnx').exists()


def test_without_the_onnx_packages(tmp_path):
    "`import dnn_cool` and .pt2 files work without onnx, onnxscript and onnxruntime; .onnx says which extra to install."
    script = r'''
import sys
for m in ('onnx', 'onnxscript', 'onnxruntime'): sys.modules[m] = None  # as if not installed
import torch
from dnn_cool import BinaryClassificationTask, Project, export_flow, load_exported
p = Project([BinaryClassificationTask('a')])
@p.add_flow
def f(flow, x, out):
    out += flow.a(x.features)
    return out
model = f.torch(in_features={'features': 3})
batch = {'features': torch.randn(4, 3)}
print(load_exported(export_flow(model, batch, 'f.pt2'))(batch)['decoded']['a'].shape)
open('g.onnx', 'wb').close()
for call in (lambda: export_flow(model, batch, 'f.onnx'), lambda: load_exported('g.onnx')):
    try: call()
    except ImportError as e: print(e)
'''
    run = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == 'torch.Size([4])'
    extra = "pip install 'dnn_cool[onnx]' (onnx, onnxscript and onnxruntime)"
    assert lines[1:] == [f'writing an .onnx file needs onnx, onnxscript: {extra}', f'running an .onnx file needs onnxruntime: {extra}']
