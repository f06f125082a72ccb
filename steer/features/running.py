"""The running state of a feature-index build: per-feature statistics and top-k contexts.

Batches are folded in with whole-tensor ops: one ``topk`` over ``[d_sae, k + batch]`` per batch
keeps the best windows of every feature at once, never a Python loop over features. The state
is exact (:meth:`RunningIndex.state_dict`), so a killed build resumes to the same index as an
unbroken one.
"""

from __future__ import annotations

import torch

from steer.errors import SteerError

# Histogram bins: 4 per decade from 0.01 to 1000 (activations below/above land in the end bins).
HIST_EDGES: list[float] = [round(10 ** (-2 + i / 4), 6) for i in range(21)]


class RunningIndex:
    """Per-feature statistics and top-k contexts, updated one batch of windows at a time."""

    def __init__(self, d_sae: int, *, top_k: int, context_tokens: int, n_bins: int):
        self.d_sae, self.top_k, self.ctx = d_sae, top_k, context_tokens
        self.n_fired = torch.zeros(d_sae, dtype=torch.int64)
        self.sum_act = torch.zeros(d_sae, dtype=torch.float64)
        self.max_act = torch.zeros(d_sae, dtype=torch.float32)
        self.hist = torch.zeros(d_sae, n_bins, dtype=torch.int64)
        # Slots hold the best windows so far, best first; an empty slot has value -1.
        self.top_vals = torch.full((d_sae, top_k), -1.0)
        self.top_acts = torch.zeros(d_sae, top_k, context_tokens)
        self.top_tokens = torch.full((d_sae, top_k, context_tokens), -1, dtype=torch.int32)
        self.top_focus = torch.zeros(d_sae, top_k, dtype=torch.int16)
        self.inner_edges = torch.tensor(HIST_EDGES[1:-1])

    def update(self, ids: torch.Tensor, acts: torch.Tensor) -> None:
        """Fold in a batch: token ids ``[B, T]`` and activations ``[B, T, d_sae]`` (zero at
        positions that were not encoded)."""
        # Every statistic works on the firing entries only (a few % of the dense tensor, for a
        # TopK SAE k of d_sae per token): reductions over the dense [B, T, d_sae] cost ~10x more.
        win, pos, feat = acts.nonzero(as_tuple=True)
        vals = acts[win, pos, feat]
        d = self.d_sae
        self.n_fired += torch.bincount(feat, minlength=d)
        self.sum_act += torch.bincount(feat, weights=vals.double(), minlength=d)
        self.max_act.scatter_reduce_(0, feat, vals, "amax")
        n_bins = self.hist.shape[1]
        bins = torch.bucketize(vals, self.inner_edges)
        self.hist += torch.bincount(feat * n_bins + bins, minlength=d * n_bins).view(d, n_bins)
        # Each window's max per feature, and the position of that max.
        key = win * d + feat
        win_max = torch.zeros(acts.shape[0] * d).scatter_reduce_(0, key, vals, "amax")
        at_max = vals == win_max[key]
        win_pos = torch.zeros(acts.shape[0] * d, dtype=torch.long)
        win_pos[key[at_max]] = pos[at_max]
        self._update_top(ids, acts, win_max.view(-1, d), win_pos.view(-1, d))

    def _update_top(
        self, ids: torch.Tensor, acts: torch.Tensor, win_max: torch.Tensor, win_pos: torch.Tensor
    ) -> None:
        # One candidate per (feature, window): the window's max token. Windows where the
        # feature is silent get -1, so they never displace anything.
        t_len = acts.shape[1]
        cand = torch.where(win_max > 0, win_max, torch.full_like(win_max, -1.0)).T
        merged = torch.cat([self.top_vals, cand], dim=1)  # [d_sae, k + B]
        vals, src = merged.topk(self.top_k, dim=1)
        keep_old = src.clamp(max=self.top_k - 1)
        c = self.ctx
        self.top_acts = self.top_acts.gather(1, keep_old[..., None].expand(-1, -1, c))
        self.top_tokens = self.top_tokens.gather(1, keep_old[..., None].expand(-1, -1, c))
        self.top_focus = self.top_focus.gather(1, keep_old)
        feat, slot = ((src >= self.top_k) & (vals > 0)).nonzero(as_tuple=True)
        if len(feat):
            win = src[feat, slot] - self.top_k
            pos = win_pos[win, feat]
            width = min(c, t_len)
            start = (pos - (width - 1 - width // 4)).clamp(min=0).clamp(max=t_len - width)
            cols = start[:, None] + torch.arange(width)
            self.top_acts[feat, slot] = 0
            self.top_tokens[feat, slot] = -1
            self.top_acts[feat, slot, :width] = acts[win[:, None], cols, feat[:, None]]
            self.top_tokens[feat, slot, :width] = ids[win[:, None], cols].int()
            self.top_focus[feat, slot] = (pos - start).short()
        self.top_vals = vals

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The exact running state (to resume from)."""
        names = ("n_fired", "sum_act", "max_act", "hist", "top_vals", "top_acts", "top_tokens")
        return {name: getattr(self, name) for name in (*names, "top_focus")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a :meth:`state_dict` (refused when a shape does not match)."""
        for name, value in state.items():
            if getattr(self, name).shape != value.shape:
                raise SteerError(f"resume state {name} has shape {list(value.shape)}")
            setattr(self, name, value)
