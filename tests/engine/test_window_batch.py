"""Sliding-window inference with several windows per forward pass gives the one-window-at-a-time result."""

import pytest
import torch

from _engine_helpers import TinyChangeNet
from geomamba.engine.inference import make_predict_fn, sliding_window_probs, window_starts


@pytest.mark.parametrize("window_batch", [2, 5, 64])
def test_batched_windows_equal_single_windows(window_batch):
    torch.manual_seed(0)
    model = TinyChangeNet().eval()
    calls = []

    def predict(x):
        calls.append(x.shape[0])
        return make_predict_fn(model)(x)

    x = torch.randn(2, 2, 3, 80, 72)
    single = sliding_window_probs(predict, x, window=32, overlap=8, pad_multiple=8)
    n_single = len(calls)
    calls.clear()
    batched = sliding_window_probs(
        predict, x, window=32, overlap=8, pad_multiple=8, window_batch=window_batch
    )
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    n_windows = len(window_starts(80, 32, 8)) * len(window_starts(72, 32, 8))
    per_call = max(1, window_batch // 2)
    n_calls = -(-n_windows // per_call)
    assert n_windows > 1 and n_single == n_windows and len(calls) == n_calls
    # equal chunks (one compiled shape), each at most per_call windows, fewer than n_calls repeats
    assert len(set(calls)) == 1 and calls[0] <= 2 * per_call
    assert 0 <= sum(calls) // 2 - n_windows < n_calls
    with pytest.raises(ValueError, match="window_batch"):
        sliding_window_probs(predict, x, window=32, overlap=8, pad_multiple=8, window_batch=0)
