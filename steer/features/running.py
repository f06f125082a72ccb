"""The running state of a feature-index build: per-feature statistics, top-k contexts and
quantile samples.

Batches are folded in with whole-tensor ops: one ``topk`` over ``[d_sae, k + batch]`` per batch
keeps the best windows of every feature at once, never a Python loop over features. The state
is exact (:meth:`RunningIndex.state_dict`), so a killed build resumes to the same index as an
unbroken one.

Quantile samples are a uniform random sample (without replacement) of the tokens each feature
fired on, so a reader sees what it does at moderate activation too, not only at its top. Each
firing token gets a pseudo-random key hashed from its place in the corpus (window, position)
and the feature; a feature keeps the ``samples`` tokens with the smallest keys. The smallest
keys of a union do not depend on how the stream was cut into batches, and the keys need no
random generator state, so a resumed build samples exactly what an unbroken one does.

Nothing in the state depends on the order the windows come in, so states built from disjoint
parts of the corpus merge exactly (:meth:`RunningIndex.merge`, how the ranks of a ``torchrun``
build combine): counts and histograms add, maxima max, samples are the smallest keys of the
union, and top contexts are ranked by activation with ties going to the earlier window of the
corpus (each slot records its window), never to whichever batch happened to come first. Only
``sum_act`` (float64) can differ, in its last bits, with the order of the additions.
"""

from __future__ import annotations

import torch

from steer.errors import SteerError

# Histogram bins: 4 per decade from 0.01 to 1000 (activations below/above land in the end bins).
HIST_EDGES: list[float] = [round(10 ** (-2 + i / 4), 6) for i in range(21)]

# Quantile samples kept per feature unless the build says otherwise.
SAMPLES = 24
_M32 = 0xFFFFFFFF
# An empty sample slot: larger than every key (keys are below 2**62).
_NO_KEY = 1 << 62


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) of ``x`` in [0, 2**32), on int64 tensors:
    every product stays below 2**59, so nothing overflows."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


def sample_keys(token: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """The sampling key of each (corpus token index, feature) pair: 32 hashed bits, then the
    token index's low 30 bits, so two tokens of one feature never tie (below 2**30 tokens)."""
    h = _mix32(_mix32(_mix32(token & _M32) ^ (token >> 32)) ^ feature)
    return (h << 30) | (token & ((1 << 30) - 1))


def _context_cols(pos: torch.Tensor, width: int, t_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start, cols)`` of the context around each position: three times more tokens before
    it than after (the model is causal: what made the feature fire is on the left)."""
    start = (pos - (width - 1 - width // 4)).clamp(min=0).clamp(max=t_len - width)
    return start, start[:, None] + torch.arange(width)


# The tensors of a state (:meth:`RunningIndex.state_dict`), in the order they are saved.
STATE_NAMES = (
    *("n_fired", "sum_act", "max_act", "hist"),
    *("top_vals", "top_acts", "top_tokens", "top_focus", "top_window", "windows_seen"),
    *("sample_keys", "sample_vals", "sample_acts", "sample_tokens", "sample_focus"),
)
_TOP = ("top_acts", "top_tokens", "top_focus", "top_window")
_SAMPLE = ("sample_vals", "sample_acts", "sample_tokens", "sample_focus")


def _best(vals: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Per row, the columns ordered by value, highest first, ties to the smaller window: the
    order of a corpus, not of the batches that brought the candidates (two stable sorts)."""
    by_window = windows.argsort(dim=1, stable=True)
    by_val = vals.gather(1, by_window).argsort(dim=1, descending=True, stable=True)
    return by_window.gather(1, by_val)


def _take(first: torch.Tensor, second: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Slots ``src`` (``[d_sae, n]``, indices into the two joined along dim 1) of two slot
    tensors ``[d_sae, slots, ...]``."""
    joined = torch.cat([first, second], dim=1)
    index = src.view(*src.shape, *([1] * (joined.dim() - 2))).expand(-1, -1, *joined.shape[2:])
    return joined.gather(1, index)


class RunningIndex:
    """Per-feature statistics, top-k contexts and quantile samples, updated one batch of
    windows at a time."""

    def __init__(
        self, d_sae: int, *, top_k: int, context_tokens: int, n_bins: int, samples: int = SAMPLES
    ):
        self.d_sae, self.top_k, self.ctx, self.samples = d_sae, top_k, context_tokens, samples
        self.n_fired = torch.zeros(d_sae, dtype=torch.int64)
        self.sum_act = torch.zeros(d_sae, dtype=torch.float64)
        self.max_act = torch.zeros(d_sae, dtype=torch.float32)
        self.hist = torch.zeros(d_sae, n_bins, dtype=torch.int64)
        # Slots hold the best windows so far, best first; an empty slot has value -1.
        self.top_vals = torch.full((d_sae, top_k), -1.0)
        self.top_acts = torch.zeros(d_sae, top_k, context_tokens)
        self.top_tokens = torch.full((d_sae, top_k, context_tokens), -1, dtype=torch.int32)
        self.top_focus = torch.zeros(d_sae, top_k, dtype=torch.int16)
        self.top_window = torch.full((d_sae, top_k), -1, dtype=torch.int64)  # corpus window
        # Quantile samples, smallest key first; an empty slot has key _NO_KEY.
        self.windows_seen = torch.tensor(0, dtype=torch.int64)
        self.sample_keys = torch.full((d_sae, samples), _NO_KEY, dtype=torch.int64)
        self.sample_vals = torch.zeros(d_sae, samples)
        self.sample_acts = torch.zeros(d_sae, samples, context_tokens)
        self.sample_tokens = torch.full((d_sae, samples, context_tokens), -1, dtype=torch.int32)
        self.sample_focus = torch.zeros(d_sae, samples, dtype=torch.int16)
        self.inner_edges = torch.tensor(HIST_EDGES[1:-1])

    def update(self, ids: torch.Tensor, acts: torch.Tensor, start: int | None = None) -> None:
        """Fold in a batch: token ids ``[B, T]`` and activations ``[B, T, d_sae]`` (zero at
        positions that were not encoded) of the corpus windows ``start .. start + B - 1``
        (default: the windows after those seen so far, for a state fed the whole corpus)."""
        start = int(self.windows_seen) if start is None else start
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
        self._update_top(ids, acts, win_max.view(-1, d), win_pos.view(-1, d), start)
        if self.samples:
            firing = vals > 0
            self._update_samples(ids, acts, win[firing], pos[firing], feat[firing], start)
        self.windows_seen += acts.shape[0]

    def _update_top(
        self,
        ids: torch.Tensor,
        acts: torch.Tensor,
        win_max: torch.Tensor,
        win_pos: torch.Tensor,
        window0: int,
    ) -> None:
        # One candidate per (feature, window): the window's max token. Windows where the
        # feature is silent get -1, so they never displace anything.
        t_len = acts.shape[1]
        fired = (win_max > 0).T
        cand = torch.where(fired, win_max.T, -1.0)
        cand_win = torch.where(fired, torch.arange(window0, window0 + len(ids)), -1)
        src = _best(torch.cat([self.top_vals, cand], 1), torch.cat([self.top_window, cand_win], 1))
        src = src[:, : self.top_k]
        vals = torch.cat([self.top_vals, cand], 1).gather(1, src)
        self.top_window = torch.cat([self.top_window, cand_win], 1).gather(1, src)
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
            start, cols = _context_cols(pos, width, t_len)
            self.top_acts[feat, slot] = 0
            self.top_tokens[feat, slot] = -1
            self.top_acts[feat, slot, :width] = acts[win[:, None], cols, feat[:, None]]
            self.top_tokens[feat, slot, :width] = ids[win[:, None], cols].int()
            self.top_focus[feat, slot] = (pos - start).short()
        self.top_vals = vals

    def _batch_candidates(
        self, keys: torch.Tensor, feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per feature, the batch's ``samples`` smallest keys: ``(cand_keys, cand_entry)``, both
        ``[d_sae, samples]``, the entry index into the batch's firing entries (-1: none)."""
        r, d = self.samples, self.d_sae
        order = torch.argsort(keys)
        order = order[torch.argsort(feat[order], stable=True)]  # by feature, then by key
        by_feat = feat[order]
        counts = torch.bincount(by_feat, minlength=d)
        rank = torch.arange(len(order)) - (torch.cumsum(counts, 0) - counts)[by_feat]
        chosen = order[rank < r]
        slot = rank[rank < r]
        cand_keys = torch.full((d, r), _NO_KEY, dtype=torch.int64)
        cand_entry = torch.full((d, r), -1, dtype=torch.int64)
        cand_keys[feat[chosen], slot] = keys[chosen]
        cand_entry[feat[chosen], slot] = chosen
        return cand_keys, cand_entry

    def _update_samples(
        self,
        ids: torch.Tensor,
        acts: torch.Tensor,
        win: torch.Tensor,
        pos: torch.Tensor,
        feat: torch.Tensor,
        window0: int,
    ) -> None:
        t_len, r, c = acts.shape[1], self.samples, self.ctx
        token = (window0 + win) * t_len + pos  # the token's index in the corpus
        cand_keys, cand_entry = self._batch_candidates(sample_keys(token, feat), feat)
        merged = torch.cat([self.sample_keys, cand_keys], dim=1)  # [d_sae, 2 * samples]
        keys, src = merged.topk(r, dim=1, largest=False)  # sorted: smallest key first
        keep_old = src.clamp(max=r - 1)
        self.sample_vals = self.sample_vals.gather(1, keep_old)
        self.sample_acts = self.sample_acts.gather(1, keep_old[..., None].expand(-1, -1, c))
        self.sample_tokens = self.sample_tokens.gather(1, keep_old[..., None].expand(-1, -1, c))
        self.sample_focus = self.sample_focus.gather(1, keep_old)
        f, slot = ((src >= r) & (keys < _NO_KEY)).nonzero(as_tuple=True)
        if len(f):
            entry = cand_entry[f, src[f, slot] - r]
            w, p = win[entry], pos[entry]
            width = min(c, t_len)
            start, cols = _context_cols(p, width, t_len)
            self.sample_vals[f, slot] = acts[w, p, f]
            self.sample_acts[f, slot] = 0
            self.sample_tokens[f, slot] = -1
            self.sample_acts[f, slot, :width] = acts[w[:, None], cols, f[:, None]]
            self.sample_tokens[f, slot, :width] = ids[w[:, None], cols].int()
            self.sample_focus[f, slot] = (p - start).short()
        self.sample_keys = keys

    def fresh(self) -> RunningIndex:
        """An empty state of the same settings."""
        n_bins = self.hist.shape[1]
        return RunningIndex(
            self.d_sae,
            top_k=self.top_k,
            context_tokens=self.ctx,
            n_bins=n_bins,
            samples=self.samples,
        )

    def merge(self, other: RunningIndex) -> None:
        """Fold in ``other``, a state of other windows of the same corpus (same settings): the
        result is the state one :class:`RunningIndex` fed both sets of windows would hold, with
        ``sum_act`` equal up to float64 rounding of the additions' order."""
        if any(getattr(self, n).shape != getattr(other, n).shape for n in STATE_NAMES):
            raise SteerError("cannot merge feature-index states of different settings")
        self.n_fired = self.n_fired + other.n_fired
        self.sum_act = self.sum_act + other.sum_act
        self.max_act = torch.maximum(self.max_act, other.max_act)
        self.hist = self.hist + other.hist
        self.windows_seen = self.windows_seen + other.windows_seen
        vals = torch.cat([self.top_vals, other.top_vals], dim=1)
        src = _best(vals, torch.cat([self.top_window, other.top_window], dim=1))[:, : self.top_k]
        for name in _TOP:
            setattr(self, name, _take(getattr(self, name), getattr(other, name), src))
        self.top_vals = vals.gather(1, src)
        # Sample keys are unique per (token, feature); equal ones are empty slots.
        keys = torch.cat([self.sample_keys, other.sample_keys], dim=1)
        keys, src = keys.topk(self.samples, dim=1, largest=False)
        for name in _SAMPLE:
            setattr(self, name, _take(getattr(self, name), getattr(other, name), src))
        self.sample_keys = keys

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The exact running state (to resume from)."""
        return {name: getattr(self, name) for name in STATE_NAMES}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a :meth:`state_dict` (refused when a shape does not match)."""
        for name, value in state.items():
            if getattr(self, name).shape != value.shape:
                raise SteerError(f"resume state {name} has shape {list(value.shape)}")
            setattr(self, name, value)
