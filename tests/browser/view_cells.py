"""Notebook cells the explanation and best/worst browser tests share: a briefly trained walkthrough network, and a
small flow whose every shirt class is named like an injected tag."""

# The walkthrough's flow, a small CNN trained three epochs on 384 scenes (a few seconds on 2 cores), and 96 new scenes.
TRAIN = '''
import json, torch
from dnn_cool import *
from dnn_cool.demo import SyntheticBackbone
torch.manual_seed(0)
flow = synthetic_project().flows['full_flow']
scenes, test_scenes = make_synthetic(384, seed=0), make_synthetic(96, seed=1)
train_ds = FlowDataset(flow, {'image': scenes.images}, scenes.labels)
test_ds = FlowDataset(flow, {'image': test_scenes.images}, test_scenes.labels)
net = FlowNet(SyntheticBackbone(width=8, out_features=32), flow.torch(in_features={'features': 32}))
optimizer, criterion = torch.optim.AdamW(net.parameters(), lr=3e-3), flow.get_loss()
for epoch in range(3):
    for x, y in train_ds.loader(batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(epoch)):
        loss = criterion(net(x), y); optimizer.zero_grad(); loss.backward(); optimizer.step()
'''

# Every class of `shirt_type` is named `<img src=x onerror=alert(k)>`: any name that reached the page unescaped would
# run a script and open a dialog, which the harness records.
EVIL = '''
from dnn_cool.synthetic import SHIRT_NAMES
evil_names = [f'<img src=x onerror=alert({k})>' for k in range(len(SHIRT_NAMES))]
evil_project = Project([BinaryClassificationTask('door_open'), BinaryClassificationTask('person_present'),
                        ClassificationTask('shirt_type', labels=evil_names)])
@evil_project.add_flow
def person(flow, x, out):
    out += flow.shirt_type(x.features)
    return out
@evil_project.add_flow
def evil_flow(flow, x, out):
    out += flow.door_open(x.features)
    out += flow.person_present(x.features) | out.door_open
    out += flow.person(x.features) | out.person_present
    return out
evil_ds = FlowDataset(evil_flow, {'image': test_scenes.images}, test_scenes.labels)
evil_net = FlowNet(SyntheticBackbone(width=8, out_features=8), evil_flow.torch(in_features={'features': 8}))
'''
