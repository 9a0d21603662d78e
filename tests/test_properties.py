"""Property tests of the counting rules of `nbs/03_flow.ipynb` (rules 1-4 and 9-13) on random flows.

Hypothesis draws flows nested up to three deep, with `~`, `&` and `|` preconditions and tasks of every predefined
type, random labels with random gaps, and random heads. A slow reference follows the written rules one sample at a
time, in plain Python (three-valued logic on `None` / `True` / `False`), and computes every per-sample loss from its
formula; the engine's vectorised masks, losses, gradients, metrics (both modes), tuner inputs and explanation trees
must agree with it."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import dnn_cool.decoder  # noqa: F401  (flow.get_decoder)
import dnn_cool.losses  # noqa: F401  (flow.get_loss)
import dnn_cool.module  # noqa: F401  (flow.torch)
from dnn_cool.data import FlowDataset
from dnn_cool.evaluation import collect_predictions
from dnn_cool.explanations import explain
from dnn_cool.flow import Project
from dnn_cool.flow_metrics import FlowMetrics
from dnn_cool.tasks import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask,
                            MaskedLanguageModelingTask, MultilabelClassificationTask, RegressionTask)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = ['binary', 'classification', 'multilabel', 'bounded', 'regression', 'mlm']
C, L, V, T = 3, 2, 4, 3  # classes, labels, vocabulary, tokens per sample
N = 12  # samples per case


# --- random flows


@st.composite
def conditions(draw, binaries):
    "None, or a precondition over earlier binary siblings: ref, not, and / or of two (each maybe negated)."
    if not binaries: return None
    kind = draw(st.sampled_from(['none', 'ref', 'ref', 'not', 'and', 'or', 'or']))
    if kind == 'none': return None
    a, b = draw(st.sampled_from(binaries)), draw(st.sampled_from(binaries))
    return (kind, a, b, draw(st.booleans()), draw(st.booleans()))


@st.composite
def children(draw, depth=1):
    "The nodes of one flow: tasks (binary ones more often, to have preconditions) and, above depth 3, nested flows."
    out = []
    for _ in range(draw(st.integers(2, 5) if depth == 1 else st.integers(1, 3))):
        if depth < 3 and draw(st.integers(0, 3)) == 0: node = {'flow': draw(children(depth + 1))}
        else: node = {'type': draw(st.sampled_from(['binary'] * 2 + TYPES))}
        node['cond'] = draw(conditions([j for j, c in enumerate(out) if c.get('type') == 'binary']))
        out.append(node)
    return out


def make_task(kind, name):
    return {'binary': lambda: BinaryClassificationTask(name), 'classification': lambda: ClassificationTask(name, num_classes=C),
            'multilabel': lambda: MultilabelClassificationTask(name, num_labels=L),
            'bounded': lambda: BoundedRegressionTask(name, 0, 1), 'regression': lambda: RegressionTask(name),
            'mlm': lambda: MaskedLanguageModelingTask(name, vocab_size=V, top_k=V)}[kind]()


def build(tree):
    "Name every node, register the tasks and define the flows bottom up; returns `(flow, tasks by path)`."
    counter = {'t': 0, 'f': 0}
    def name(nodes):
        for c in nodes:
            kind = 'f' if 'flow' in c else 't'
            c['name'] = f"{kind}{counter[kind]}"
            counter[kind] += 1
            if 'flow' in c: name(c['flow'])
    name(tree)
    project = Project()
    kinds = {}
    def define(nodes, flow_name):
        for c in nodes:
            if 'flow' in c: define(c['flow'], c['name'])
            else: project.add_task(make_task(c['type'], c['name']))
        def body(flow, x, out):
            for c in nodes:
                pending = getattr(flow, c['name'])(x if 'flow' in c else (x.tokens if c.get('type') == 'mlm' else x.features))
                if c['cond'] is not None:
                    kind, a, b, na, nb = c['cond']
                    ra, rb = getattr(out, nodes[a]['name']), getattr(out, nodes[b]['name'])
                    ra, rb = (~ra if na else ra), (~rb if nb else rb)
                    pending = pending | {'ref': ra, 'not': ~ra, 'and': ra & rb, 'or': ra | rb}[kind]
                out += pending
            return out
        return project.add_flow(body, name=flow_name)
    flow = define(tree, 'root')
    return flow


def paths(tree, prefix=''):
    "`{path: node}` of every task and nested flow, depth first."
    out = {}
    for c in tree:
        out[prefix + c['name']] = c
        if 'flow' in c: out.update(paths(c['flow'], prefix + c['name'] + '.'))
    return out


# --- random labels


def labels_for(tree, seed):
    "A DataFrame of labels with random gaps, and the features / tokens inputs."
    g = np.random.default_rng(seed)
    missing = g.uniform(0, 0.6)
    cols = {}
    for path, c in paths(tree).items():
        if 'flow' in c: continue
        gap = g.random(N) < missing
        kind, name = c['type'], c['name']
        if kind == 'binary': cols[name] = [None if m else bool(v) for m, v in zip(gap, g.random(N) < 0.5)]
        elif kind == 'classification': cols[name] = pd.array([None if m else int(v) for m, v in zip(gap, g.integers(0, C, N))], dtype='Int64')
        elif kind == 'multilabel':
            cols[name] = [None if m else [None if g.random() < missing else int(g.random() < 0.5) for _ in range(L)] for m in gap]
        elif kind == 'bounded': cols[name] = np.where(gap, np.nan, g.random(N))
        elif kind == 'regression': cols[name] = np.where(gap, np.nan, g.normal(size=N))
        else: cols[name] = [[-100 if g.random() < missing else int(g.integers(0, V)) for _ in range(T)] for _ in range(N)]
    inputs = {'features': torch.from_numpy(g.normal(size=(N, 4)).astype(np.float32)),
              'tokens': torch.from_numpy(g.normal(size=(N, T, 4)).astype(np.float32))}
    return pd.DataFrame(cols), inputs


@st.composite
def cases(draw):
    tree = draw(children())
    seed = draw(st.integers(0, 2 ** 16))
    flow = build(tree)
    labels, inputs = labels_for(tree, seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tasks without a single label are fine here
        ds = FlowDataset(flow, {k: v for k, v in inputs.items() if k in flow.graph.input_keys}, labels)
    torch.manual_seed(seed)
    model = flow.torch(in_features={'features': 4, 'tokens': 4})
    with torch.no_grad():
        for p in flow.graph.paths: model.head(p).weight.mul_(3)  # spread the scores: decisions go both ways
    return tree, flow, ds, model


# --- the reference, one sample at a time


def present(kind, target, s) -> bool:
    "Rule: a label is present (NaN / -1 / -100 mark it missing; multilabel / tokens: any entry present)."
    t = target[s]
    if kind in ('binary', 'bounded', 'regression'): return not math.isnan(float(t))
    if kind == 'classification': return int(t) >= 0
    if kind == 'multilabel': return any(not math.isnan(float(v)) for v in t)
    return any(int(v) != -100 for v in t)


def kleene(cond, values):
    "Three-valued value of a precondition from the siblings' values (None: unknown)."
    kind, a, b, na, nb = cond
    def lit(j, neg):
        v = values.get(j)
        return None if v is None else (not v if neg else v)
    va, vb = lit(a, na), lit(b, nb)
    if kind == 'ref': return va
    if kind == 'not': return None if va is None else not va
    if kind == 'and': return False if False in (va, vb) else (None if None in (va, vb) else True)
    return True if True in (va, vb) else (None if None in (va, vb) else False)


def applies(tree, s, truth, known):
    "`{path: bool}` for every task and nested flow of sample `s`: rules 1-5, `truth` / `known` give out.<b>."
    out = {}
    def visit(nodes, prefix, parent):
        values = {}
        for j, c in enumerate(nodes):
            path = prefix + c['name']
            on = parent and (c['cond'] is None or kleene(c['cond'], values) is True)
            out[path] = on
            if 'flow' in c: visit(c['flow'], path + '.', on)
            elif c['type'] == 'binary': values[j] = truth(path, s) if on and known(path, s) else None
    visit(tree, '', True)
    return out


def ref_masks(tree, ds, logits, mode):
    "`{task path: [bool] * N}`: the samples a task counts (`mode` 'gt': rules 9-10, 'pred': rule 11)."
    kinds = {p: c['type'] for p, c in paths(tree).items() if 'flow' not in c}
    if mode == 'gt':
        truth = lambda p, s: float(ds.targets[p][s]) > 0.5
        known = lambda p, s: present('binary', ds.targets[p], s)
    else:
        truth = lambda p, s: bool(torch.sigmoid(logits[p][s]) >= 0.5)
        known = lambda p, s: True
    on = [applies(tree, s, truth, known) for s in range(N)]
    return {p: [on[s][p] and present(k, ds.targets[p], s) for s in range(N)] for p, k in kinds.items()}


def ref_visible(tree, logits):
    "Rule 13: the paths (tasks and flows) an explanation shows for each sample."
    truth = lambda p, s: bool(torch.sigmoid(logits[p][s]) >= 0.5)
    return [{p for p, on in applies(tree, s, truth, lambda p, s: True).items() if on} for s in range(N)]


def ref_sample_loss(kind, l, t):
    "One sample's loss from its formula (float64), on logits `l` and target `t` of that sample alone."
    l = l.double()
    if kind == 'binary': return torch.nn.functional.softplus(l) - l * float(t)
    if kind == 'classification': return torch.logsumexp(l, 0) - l[int(t)]
    if kind == 'multilabel':
        terms = [torch.nn.functional.softplus(l[j]) - l[j] * float(t[j]) for j in range(L) if not math.isnan(float(t[j]))]
        return sum(terms) / len(terms)
    if kind == 'bounded': return (torch.sigmoid(l) - float(t)) ** 2
    if kind == 'regression': return (l - float(t)) ** 2
    terms = [torch.logsumexp(l[i], 0) - l[i][int(t[i])] for i in range(T) if int(t[i]) != -100]
    return sum(terms) / len(terms)


def ref_metric(kind, logits, target, mask):
    "The one metric checked per type, over the selected samples (NaN when none): accuracy, MAE, subset accuracy."
    rows = [s for s in range(N) if mask[s]]
    if kind == 'binary': vals = [float((torch.sigmoid(logits[s]) >= 0.5) == (float(target[s]) > 0.5)) for s in rows]
    elif kind == 'classification': vals = [float(int(logits[s].argmax()) == int(target[s])) for s in rows]
    elif kind == 'bounded': vals = [abs(float(torch.sigmoid(logits[s])) - float(target[s])) for s in rows]
    elif kind == 'regression': vals = [abs(float(logits[s]) - float(target[s])) for s in rows]
    elif kind == 'multilabel':
        vals = [float(all((float(torch.sigmoid(logits[s][j])) >= 0.5) == (float(target[s][j]) > 0.5) for j in range(L)))
                for s in rows if not any(math.isnan(float(v)) for v in target[s])]
    else: vals = [float(int(logits[s][i].argmax()) == int(target[s][i])) for s in rows for i in range(T) if int(target[s][i]) != -100]
    return sum(vals) / len(vals) if vals else float('nan')


METRIC = {'binary': 'accuracy', 'classification': 'accuracy_1', 'bounded': 'mean_absolute_error',
          'regression': 'mean_absolute_error', 'multilabel': 'subset_accuracy', 'mlm': 'accuracy_1'}


def batch(ds):
    return ds[list(range(N))]


def kinds_of(tree):
    return {p: c['type'] for p, c in paths(tree).items() if 'flow' not in c}


# --- the properties


@SETTINGS
@given(cases())
def test_masked_loss_and_gradients_follow_the_rules(case):
    "Rule 9: per-task means over the counted samples, their counts, the total, and the gradient on every logit."
    tree, flow, ds, model = case
    x, y = batch(ds)
    out = model.train()(x)
    leaf = {p: v.detach().clone().requires_grad_() for p, v in out['logits'].items()}
    bd = flow.get_loss().breakdown({'logits': leaf, 'precondition': out['precondition']}, y)
    bd.total.backward()
    ref_leaf = {p: v.detach().clone().requires_grad_() for p, v in out['logits'].items()}
    masks, total = ref_masks(tree, ds, leaf, 'gt'), 0.0
    for p, kind in kinds_of(tree).items():
        counted = [s for s in range(N) if masks[p][s]]
        assert int(bd.counts[p]) == len(counted), p
        assert bd.mask[p].tolist() == masks[p], p
        if counted:
            mean = sum(ref_sample_loss(kind, ref_leaf[p][s], y[p][s]) for s in counted) / len(counted)
            torch.testing.assert_close(bd.per_task[p].double(), mean.detach(), rtol=1e-5, atol=1e-6)
            total = total + mean
        else: assert float(bd.per_task[p].detach()) == 0.0, p
    torch.testing.assert_close(bd.total.double(), torch.as_tensor(total).double().detach(), rtol=1e-5, atol=1e-5)
    if torch.is_tensor(total): total.backward()
    for p in kinds_of(tree):
        g = leaf[p].grad
        outside = torch.tensor([not m for m in masks[p]])
        assert g is None or (g[outside] == 0).all(), f"{p}: gradient on samples that don't count"
        ref = ref_leaf[p].grad if ref_leaf[p].grad is not None else torch.zeros_like(leaf[p])
        torch.testing.assert_close(torch.zeros_like(ref) if g is None else g, ref, rtol=1e-4, atol=1e-6)


@SETTINGS
@given(cases(), st.sampled_from(['gt', 'pred']))
def test_metrics_count_the_right_samples_in_both_modes(case, mode):
    "Rules 10-11: `num_samples` and each type's metric over exactly the samples of the mode."
    tree, flow, ds, model = case
    x, y = batch(ds)
    model.eval()
    with torch.no_grad(): out = model(x)
    metrics = FlowMetrics(flow, mode=mode)
    metrics.update(out, y)
    masks, scores, counts = ref_masks(tree, ds, out['logits'], mode), metrics.compute(), metrics.num_samples()
    for p, kind in kinds_of(tree).items():
        assert counts[p] == sum(masks[p]), (p, mode)
        want, got = ref_metric(kind, out['logits'][p], y[p], masks[p]), scores[p][METRIC[kind]]
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-6), (p, mode, got, want)


@SETTINGS
@given(cases())
def test_the_tuner_sees_the_gt_counted_samples(case):
    "Rule 12: each binary threshold, and each label's of a multilabel task, is tuned on the gt-counted samples with that label."
    tree, flow, ds, model = case
    preds = collect_predictions(model, [batch(ds)])
    masks = ref_masks(tree, ds, preds.logits, 'gt')
    decoder, want = flow.get_decoder(), {}
    for p, kind in kinds_of(tree).items():
        t = ds.targets[p]
        if kind == 'binary':
            rows = [s for s in range(N) if masks[p][s]]
            want[p] = [(len(rows), sum(float(t[s]) > 0.5 for s in rows))]
        elif kind == 'multilabel':
            per = [[s for s in range(N) if masks[p][s] and not math.isnan(float(t[s][j]))] for j in range(L)]
            want[p] = [(len(r), sum(float(t[s][j]) > 0.5 for s in r)) for j, r in enumerate(per)]
    inputs = decoder._tune_inputs(preds, None, None, list(want))
    for p in want: assert inputs[p][2].tolist() == masks[p], p  # the per-sample mask the tuner starts from
    tunable = [p for p, w in want.items() if all(n > 0 for n, _ in w)]
    if not tunable: return
    results = decoder.tune(preds, tasks=tunable, apply=False, min_per_class=0)
    for p in tunable:
        got = [(r.num_samples, r.num_positive) for r in (results[p] if isinstance(results[p], list) else [results[p]])]
        assert got == want[p], p


@SETTINGS
@given(cases())
def test_explanations_show_exactly_the_branches_that_apply(case):
    "Rule 13: a task or nested flow is in a sample's tree exactly when it applies by the decoded predictions."
    tree, flow, ds, model = case
    x, _ = batch(ds)
    model.eval()
    with torch.no_grad(): out = model(x)
    visible = ref_visible(tree, out['logits'])
    for s in range(N):
        shown = {n.path for n in explain(flow, out, s).walk() if n.path}
        assert shown == visible[s], s
        every = explain(flow, out, s, show_hidden=True)
        assert {n.path for n in every.walk() if n.path and not n.hidden} == visible[s]
        assert {n.path for n in every.walk() if n.path} == set(paths(tree))
