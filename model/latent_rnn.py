"""The recurrent latent predictor (Sound-guided Semantic Video Generation, ECCV 2022, eq. 4-5).

W+ is split into layer groups — coarse, mid, fine (paper: ws 0-2, 3-5, 6-15 of a 16-w
generator) — and each group has its own recurrent block that predicts the group's next latent
from the previous latent plus E_a of the previous audio segment::

    ŵᵗ, hᵗ = RNN(hᵗ⁻¹, E_a(xᵗ⁻¹) + ŵᵗ⁻¹)

Live, the engine calls :meth:`LatentRNN.step` once per model tick with an explicit, fixed-size
state tensor (no growth over hours); training unrolls a sequence with :meth:`LatentRNN.forward`,
which is exactly repeated ``step`` calls.

Each block predicts a residual on its input: ``ŵᵗ = u + f(hᵗ)`` with ``u = ŵᵗ⁻¹ + Δᵗ⁻¹``, and
``f``'s output layer starts near zero, so an untrained predictor is "previous latent plus
E_a's delta". Note that this integrates deltas over time; the caller decides what the
previous latent is (e.g. re-anchored to the base latent) so a show does not drift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.formats import load_network, save_network

log = logging.getLogger(__name__)

LayerGroups = tuple[tuple[int, int], ...]

# The paper's split of a 16-w (512 px) generator: coarse [0,3), mid [3,6), fine [6,16).
PAPER_NUM_WS = 16
PAPER_GROUP_BOUNDS = (3, 6)
GROUP_NAMES = ("coarse", "mid", "fine")
CELLS = ("gru", "lstm")


def default_layer_groups(num_ws: int) -> LayerGroups:
    """Coarse / mid / fine ``[start, stop)`` ranges for ``num_ws`` ws, the paper's split scaled.

    16 → ((0, 3), (3, 6), (6, 16)) exactly as the paper; other sizes scale the boundaries
    proportionally (rounded half up): 14 → ((0, 3), (3, 5), (5, 14)),
    18 → ((0, 3), (3, 7), (7, 18)). Needs at least 3 ws.
    """
    if isinstance(num_ws, bool) or not isinstance(num_ws, int) or num_ws < 3:
        raise ValueError(f"default_layer_groups needs num_ws >= 3, got {num_ws!r}")
    a = int(PAPER_GROUP_BOUNDS[0] * num_ws / PAPER_NUM_WS + 0.5)
    b = int(PAPER_GROUP_BOUNDS[1] * num_ws / PAPER_NUM_WS + 0.5)
    a = min(max(a, 1), num_ws - 2)
    b = min(max(b, a + 1), num_ws - 1)
    return ((0, a), (a, b), (b, num_ws))


def validate_layer_groups(groups: Sequence[Sequence[int]], num_ws: int) -> LayerGroups:
    """Check that groups are contiguous, non-empty, in order and cover ``[0, num_ws)`` exactly."""
    try:
        out = tuple((int(g[0]), int(g[1])) for g in groups if len(g) == 2)
    except (TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"layer groups must be (start, stop) pairs, got {groups!r}") from exc
    if len(out) != len(groups) or not out:
        raise ValueError(f"layer groups must be a non-empty list of (start, stop) pairs, got {groups!r}")
    expected_start = 0
    for start, stop in out:
        if start != expected_start or stop <= start:
            raise ValueError(
                f"layer groups {out} must be non-empty, in order and contiguous from 0 to num_ws={num_ws}"
            )
        expected_start = stop
    if expected_start != num_ws:
        raise ValueError(f"layer groups {out} cover [0, {expected_start}) but the generator has {num_ws} ws")
    return out


def group_names(groups: LayerGroups) -> tuple[str, ...]:
    """Human names for groups: coarse/mid/fine for three, g0, g1, ... otherwise."""
    return GROUP_NAMES if len(groups) == 3 else tuple(f"g{i}" for i in range(len(groups)))


@dataclass
class LatentRNNConfig:
    """Hyperparameters of the recurrent predictor; saved next to its weights."""

    num_ws: int = 16  # W+ layers of the generator.
    w_dim: int = 512  # Width of each w.
    hidden_dim: int = 512  # Recurrent state width per group.
    groups: tuple[tuple[int, int], ...] = ()  # [start, stop) W+ ranges; () = default_layer_groups(num_ws).
    cell: str = "gru"  # "gru" or "lstm".
    out_init_gain: float = 0.01  # Scale of the output layer at init (≈0: untrained ≈ identity + delta).

    def __post_init__(self) -> None:
        for name in ("num_ws", "w_dim", "hidden_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"LatentRNNConfig.{name} must be a positive int, got {v!r}")
        self.groups = default_layer_groups(self.num_ws) if not self.groups else validate_layer_groups(
            self.groups, self.num_ws
        )
        if self.cell not in CELLS:
            raise ValueError(f"LatentRNNConfig.cell must be one of {CELLS}, got {self.cell!r}")
        if not self.out_init_gain >= 0:
            raise ValueError(f"LatentRNNConfig.out_init_gain must be >= 0, got {self.out_init_gain!r}")


class GroupBlock(nn.Module):
    """One recurrent block: its group's ``u = ŵ + Δ`` → next latent of the group, residually.

    ``[B, n, w_dim]`` → Linear to ``hidden`` → GRU/LSTM cell → Linear back to ``[B, n, w_dim]``,
    added to ``u``.
    """

    def __init__(self, n_ws: int, w_dim: int, hidden_dim: int, cell: str, out_init_gain: float) -> None:
        super().__init__()
        self.n_ws, self.w_dim, self.hidden_dim, self.cell_type = n_ws, w_dim, hidden_dim, cell
        self.inp = nn.Linear(n_ws * w_dim, hidden_dim)
        self.cell: nn.Module = nn.GRUCell(hidden_dim, hidden_dim) if cell == "gru" else nn.LSTMCell(hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, n_ws * w_dim)
        with torch.no_grad():
            self.out.weight.mul_(out_init_gain)
            self.out.bias.zero_()

    @property
    def state_width(self) -> int:
        """Columns of this block's slice of the state (h, or h and c side by side for an LSTM)."""
        return self.hidden_dim * (2 if self.cell_type == "lstm" else 1)

    def extra_repr(self) -> str:
        return f"n_ws={self.n_ws}, w_dim={self.w_dim}, hidden={self.hidden_dim}, cell={self.cell_type}"

    def forward(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = u.shape[0]
        x = F.leaky_relu(self.inp(u.reshape(b, -1)), 0.2)  # [B, hidden]
        if self.cell_type == "gru":
            h = self.cell(x, state)  # [B, hidden]
            new_state = h
        else:
            h, c = self.cell(x, (state[:, : self.hidden_dim], state[:, self.hidden_dim :]))
            new_state = torch.cat([h, c], dim=1)  # [B, 2*hidden]
        w = u + self.out(h).view(b, self.n_ws, self.w_dim)  # [B, n, w_dim]
        return w, new_state


class LatentRNN(nn.Module):
    """Three (or len(groups)) recurrent blocks over W+ groups; one step per audio segment."""

    def __init__(self, config: LatentRNNConfig) -> None:
        super().__init__()
        self.config = config
        self.groups: LayerGroups = config.groups
        self.blocks = nn.ModuleList(
            GroupBlock(stop - start, config.w_dim, config.hidden_dim, config.cell, config.out_init_gain)
            for start, stop in self.groups
        )

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    @property
    def state_width(self) -> int:
        return self.blocks[0].state_width

    def extra_repr(self) -> str:
        return f"num_ws={self.num_ws}, w_dim={self.w_dim}, groups={self.groups}, cell={self.config.cell}"

    def init_state(
        self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """A zero state ``[num_groups, batch, state_width]``; fixed size for the life of a show."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"LatentRNN.init_state: batch must be a positive int, got {batch!r}")
        return torch.zeros(len(self.blocks), batch, self.state_width, device=device, dtype=dtype)

    def _check_w(self, w: torch.Tensor, name: str) -> None:
        if not isinstance(w, torch.Tensor) or w.dim() != 3 or tuple(w.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(
                f"LatentRNN: {name} must be [B, {self.num_ws}, {self.w_dim}], got {tuple(getattr(w, 'shape', ()))}"
            )

    def step(
        self, w_prev: torch.Tensor, delta: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One model tick: ``(ŵᵗ⁻¹ [B,num_ws,w_dim], Δᵗ⁻¹ = E_a(xᵗ⁻¹) [same], state) → (ŵᵗ, state')``."""
        self._check_w(w_prev, "w_prev")
        self._check_w(delta, "delta")
        expected = (len(self.blocks), w_prev.shape[0], self.state_width)
        if not isinstance(state, torch.Tensor) or tuple(state.shape) != expected:
            raise ValueError(
                f"LatentRNN: state must be {list(expected)} (from init_state), got {tuple(getattr(state, 'shape', ()))}"
            )
        u = w_prev + delta  # [B, num_ws, w_dim]
        outs, states = [], []
        for i, (block, (start, stop)) in enumerate(zip(self.blocks, self.groups)):
            w_g, s_g = block(u[:, start:stop], state[i])
            outs.append(w_g)
            states.append(s_g)
        return torch.cat(outs, dim=1), torch.stack(states, dim=0)

    def forward(
        self, w0: torch.Tensor, deltas: torch.Tensor, state: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unroll: ``w0 [B,num_ws,w_dim]``, ``deltas [B,T,num_ws,w_dim]`` → ``ws [B,T,num_ws,w_dim]``.

        ``ws[:, t]`` is the latent after consuming ``deltas[:, t]``; equal to ``T`` calls of
        :meth:`step` starting from ``state`` (zeros if None).
        """
        self._check_w(w0, "w0")
        if not isinstance(deltas, torch.Tensor) or deltas.dim() != 4 or deltas.shape[0] != w0.shape[0] \
                or tuple(deltas.shape[2:]) != (self.num_ws, self.w_dim) or deltas.shape[1] < 1:
            raise ValueError(
                f"LatentRNN: deltas must be [B={w0.shape[0]}, T>=1, {self.num_ws}, {self.w_dim}], "
                f"got {tuple(getattr(deltas, 'shape', ()))}"
            )
        if state is None:
            state = self.init_state(w0.shape[0], w0.device, w0.dtype)
        w = w0
        ws = []
        for t in range(deltas.shape[1]):
            w, state = self.step(w, deltas[:, t], state)
            ws.append(w)
        return torch.stack(ws, dim=1)


KIND = "latent_rnn"


def save_latent_rnn(path: str | Path, model: LatentRNN, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the predictor as PATH.safetensors + PATH.json (kind 'latent_rnn')."""
    return save_network(path, model, model.config, KIND, metadata)


def load_latent_rnn(path: str | Path, device: str | torch.device = "cpu") -> LatentRNN:
    """Load the predictor (eval mode); raises CheckpointError on any problem."""
    model, _, _ = load_network(path, LatentRNNConfig, LatentRNN, KIND, device)
    return model
