"""Whole-stack checks: tasks guessed from the walkthrough's labels, and a masked-language-modelling task trained,
evaluated and predicted through the same Trainer / evaluate / predict as every other task."""
import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from dnn_cool import (BinaryClassificationTask, FlowDataset, MaskedLanguageModelingTask, Project, Trainer, evaluate,
                      predict, tasks_from_dataframe)
from dnn_cool.synthetic import BOX_COLUMNS, make_synthetic, synthetic_project


def test_guessed_tasks_match_the_walkthrough_tasks():
    labels = make_synthetic(300, seed=1).labels
    guessed = {t.name: t for t in tasks_from_dataframe(labels, ranges={c: (0, 64) for c in BOX_COLUMNS})}
    declared = synthetic_project().tasks
    assert {n: type(t) for n, t in guessed.items()} == {n: type(t) for n, t in declared.items()}
    assert guessed['shirt_type'].num_classes == 7 and guessed['facial_characteristics'].num_labels == 3
    assert (guessed['face_x1'].low, guessed['face_x1'].high) == (0.0, 64.0)


def _mlm_data(n, seq, vocab, seed):
    "Token ids whose masked positions are predictable from the visible features: target token = feature argmax."
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, seq), generator=g)
    hidden = nn.functional.one_hot(tokens, vocab).float() * 4 + 0.3 * torch.randn(n, seq, vocab, generator=g)  # (n, T, V)
    scored = torch.rand(n, seq, generator=g) < 0.3
    targets = torch.where(scored, tokens, -100)
    targets[: n // 10] = -100  # a tenth of the samples have no scored token: their label is missing
    has_text = (torch.rand(n, generator=g) < 0.8).float()
    return hidden, targets, has_text


def test_masked_language_modelling_trains_and_evaluates():
    n, seq, vocab = 400, 12, 16
    hidden, targets, has_text = _mlm_data(n, seq, vocab, seed=0)
    project = Project([BinaryClassificationTask('has_text'), MaskedLanguageModelingTask('mlm', vocab_size=vocab)])

    @project.add_flow
    def text_flow(flow, x, out):
        out += flow.has_text(x.pooled)
        out += flow.mlm(x.tokens) | out.has_text
        return out

    labels = pd.DataFrame({'has_text': has_text.bool().numpy(), 'mlm': list(targets.numpy())})
    ds = FlowDataset(text_flow, {'tokens': hidden, 'pooled': hidden.mean(1)}, labels)
    model = text_flow.torch(in_features={'tokens': vocab, 'pooled': vocab})
    trainer = Trainer(model, text_flow.get_loss(), torch.optim.Adam(model.parameters(), lr=0.05),
                      ds.loader(64, shuffle=True, generator=torch.Generator().manual_seed(0)), flow=text_flow,
                      epochs=8, progress=False, seed=0)
    history = trainer.fit()
    assert history['train/mlm/loss'][-1] < 0.5 * history['train/mlm/loss'][0]

    table = evaluate(model, ds.loader(100), text_flow).set_index(['task_path', 'metric_name'])
    # independent reference: top-1 accuracy over scored tokens of samples whose text flag is set in the ground truth
    model.eval()
    with torch.no_grad():
        pred = model({'tokens': hidden, 'pooled': hidden.mean(1)})['logits']['mlm'].argmax(-1)  # (n, T)
    use = (targets != -100) & has_text.bool()[:, None]
    assert np.isclose(table.loc[('mlm', 'accuracy_1'), 'metric_res'], (pred[use] == targets[use]).float().mean().item())
    counted = int((use.any(1)).sum())
    assert table.loc[('mlm', 'accuracy_1'), 'num_samples'] == counted
    assert table.loc[('mlm', 'accuracy_1'), 'metric_res'] > 0.9

    preds = predict(model, ds.loader(100), text_flow)
    assert len(preds) == n and {'has_text', 'mlm'} <= set(preds.columns)


class CountTask(__import__('dnn_cool').ITask):
    "A custom ITask subclass (as in nbs/02_tasks.ipynb): Poisson counts."
    def __init__(self, name): self.name = name
    def make_head(self, in_features): return nn.Linear(in_features, 1)
    def activate(self, logits): return logits.squeeze(-1).exp()
    def decode(self, activated): return activated.round()
    def sample_losses(self, logits, target):
        return nn.functional.poisson_nll_loss(logits.squeeze(-1), torch.nan_to_num(target), log_input=True, reduction='none')
    def available(self, target): return ~torch.isnan(target)
    def encode(self, values): return torch.tensor(pd.to_numeric(values).to_numpy(np.float32, na_value=np.nan))
    def make_metrics(self, detailed=False):
        from dnn_cool.metrics import RegressionMetrics
        return RegressionMetrics()


def test_custom_itask_subclass_trains_behind_a_precondition():
    g = torch.Generator().manual_seed(0)
    n = 600
    feats = torch.randn(n, 4, generator=g)
    present = feats[:, 0] > 0
    counts = torch.poisson(torch.exp(0.8 * feats[:, 1] + 0.5), generator=g)
    labels = pd.DataFrame({'present': present.numpy(), 'n_people': torch.where(present, counts, float('nan')).numpy()})
    project = Project([BinaryClassificationTask('present'), CountTask('n_people')])

    @project.add_flow
    def people(flow, x, out):
        out += flow.present(x.f)
        out += flow.n_people(x.f) | out.present
        return out

    ds = FlowDataset(people, {'f': feats}, labels)
    model = people.torch(in_features={'f': 4})
    Trainer(model, people.get_loss(), torch.optim.Adam(model.parameters(), lr=0.05), ds.loader(100, shuffle=True),
            flow=people, epochs=30, progress=False, seed=0).fit()
    table = evaluate(model, ds.loader(200), people).set_index(['task_path', 'metric_name'])
    assert table.loc[('n_people', 'mean_absolute_error'), 'num_samples'] == int(present.sum())
    model.eval()
    with torch.no_grad():
        rate = model({'f': feats})['activated']['n_people']
    # the fitted rate follows the true one on the samples that trained it (independent reference: the generator)
    true_rate = torch.exp(0.8 * feats[:, 1] + 0.5)
    assert torch.corrcoef(torch.stack([rate[present], true_rate[present]]))[0, 1] > 0.95
