"""checkpoint_module: same outputs, gradients and BatchNorm statistics as a plain call."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from geomamba.layers.checkpoint import checkpoint_module


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.3), nn.Conv2d(8, 4, 1)
    )


def test_same_output_gradients_and_running_stats():
    plain = _net()
    ckpt = copy.deepcopy(plain)
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(1)
    y1 = plain(x)
    y1.square().sum().backward()
    torch.manual_seed(1)
    y2 = checkpoint_module(ckpt, x)
    y2.square().sum().backward()
    torch.testing.assert_close(y1, y2)
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)
    for (name, b1), b2 in zip(plain.named_buffers(), ckpt.buffers()):
        torch.testing.assert_close(b1, b2, msg=name)
    assert int(ckpt[1].num_batches_tracked) == 1


def test_plain_torch_checkpoint_would_count_batchnorm_twice():
    # why checkpoint_module exists: the recomputation updates BatchNorm statistics a second time
    net = _net()
    cp.checkpoint(net, torch.randn(2, 3, 8, 8), use_reentrant=False).sum().backward()
    assert int(net[1].num_batches_tracked) == 2
    net = _net()
    checkpoint_module(net, torch.randn(2, 3, 8, 8)).sum().backward()
    assert int(net[1].num_batches_tracked) == 1


def test_plain_call_in_eval_or_without_grad():
    net = _net().eval()
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(checkpoint_module(net, x), net(x))
    net.train()
    with torch.no_grad():
        out = checkpoint_module(net, x, fn=lambda t: net[0](t))
    torch.testing.assert_close(out, net[0](x))
