"""Selective scan (Mamba S6) with backend dispatch.

``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
return_last_state=False, backend="auto")``

    delta_t = softplus(delta_t + delta_bias)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t     = <C_t, h_t> + D * u_t        (then y * silu(z) when z is given)

Shapes: u, delta, z ``(batch, D, L)``; A ``(D, N)``; B, C ``(batch, G, N, L)``, G divides D;
D, delta_bias ``(D,)``. Output ``(batch, D, L)`` in u's dtype (and the fp32 last state
``(batch, D, N)`` with ``return_last_state``).

INTERIM: this first version runs the naive loop for every backend; the chunked reference, the custom
op and the dispatch replace it.
"""

from __future__ import annotations

from geomamba.ops.selective_scan.naive import selective_scan_naive

__all__ = ["selective_scan", "selective_scan_naive"]


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=True,
    return_last_state=False,
    backend="auto",
):
    return selective_scan_naive(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
