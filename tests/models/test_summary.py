import torch
import torch.nn as nn

import geomamba
from geomamba.layers.fadc import FrequencyAdaptiveDilatedConv


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList([nn.Conv2d(8, 4, 1), nn.Conv2d(4, 2, 1)])  # a container never called

    def forward(self, x):
        x = self.conv(x)
        for b in self.blocks:
            x = b(x)
        return x


def test_counts_exact_on_a_small_net():
    s = geomamba.summary(_Net(), (2, 3, 10, 10), print_table=False)
    conv = 2 * 2 * 8 * 100 * 3 * 9
    pointwise = 2 * 2 * 100 * (8 * 4 + 4 * 2)
    assert s.flops == conv + pointwise and s.macs == s.flops // 2
    assert s.total_params == 3 * 8 * 9 + (8 * 4 + 4) + (4 * 2 + 2) == s.trainable_params
    rows = {m.name: m for m in s.modules}
    assert set(rows) == {"conv", "blocks"}
    assert rows["conv"].flops == conv and rows["blocks"].flops == pointwise
    assert "blocks" in s.table() and "GFLOPs" in s.table()


def test_deformable_conv_is_counted():
    layer = FrequencyAdaptiveDilatedConv(4, 6)
    s = geomamba.summary(layer, (1, 4, 8, 8), print_table=False)
    deform = 2 * 6 * 64 * 4 * 9
    predictor = 2 * 1 * 64 * 4 * 9
    assert s.flops == deform + predictor


def test_model_summary_breakdown_adds_up(capsys):
    model = geomamba.create_model("subtask_mamba_tiny")
    s = geomamba.summary(model, (1, 2, 3, 32, 32))
    assert s.model == "subtask_mamba_tiny"
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert sum(m.params for m in s.modules) == s.total_params
    assert sum(m.flops for m in s.modules) == s.flops > 0
    assert model.training  # mode restored
    assert "differences" in capsys.readouterr().out
    deeper = geomamba.summary(model, inputs=torch.randn(1, 2, 3, 32, 32), depth=2, print_table=False)
    assert any(m.name == "stages.0" for m in deeper.modules) and deeper.flops == s.flops
