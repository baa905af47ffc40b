"""Private parts of :class:`~cortexlink.decoders.phoneme_ctc.PhonemeDecoder`: input checks, the
torch network, the augmentation, the CTC training loop and a small phoneme error rate used to pick
the best epoch.

Only :mod:`cortexlink.decoders.phoneme_ctc` imports it; ``torch`` is imported inside the functions
that need it, so importing this module stays light.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import time
from typing import Any, Callable, Sequence

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.phonemes import BLANK, N_CLASSES, SIL, collapse_ctc
from cortexlink.core.types import BinnedFeatures

logger = logging.getLogger(__name__)


def as_trials(X: Any, name: str = "X", dtype=np.float64) -> tuple[list[np.ndarray], tuple[str, ...] | None]:
    """A list of (T_i, F) arrays of ``dtype`` (non-empty, same F) and the feature names if given."""
    if isinstance(X, (np.ndarray, BinnedFeatures)) or not isinstance(X, Sequence) or isinstance(X, str):
        raise ValidationError(f"{name} must be a list of trials, each an array (n_bins, n_features); "
                              f"got {type(X).__name__}")
    if len(X) == 0:
        raise ValidationError(f"{name} must hold at least one trial; got an empty list")
    out: list[np.ndarray] = []
    names: tuple[str, ...] | None = None
    for i, x in enumerate(X):
        if isinstance(x, BinnedFeatures):
            if names is not None and tuple(x.feature_names) != names:
                raise ValidationError(f"{name}[{i}] has other feature names than {name}[0]")
            names = tuple(x.feature_names)
            x = x.data
        try:
            a = np.asarray(x, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"{name}[{i}] must be a numeric array (n_bins, n_features): {exc}") from None
        if a.ndim != 2:
            raise ValidationError(f"{name}[{i}] must be 2-D (n_bins, n_features); got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValidationError(f"{name}[{i}] is empty (0 bins); every trial needs at least one bin")
        if out and a.shape[1] != out[0].shape[1]:
            raise ValidationError(f"every trial must have the same number of features; {name}[0] has "
                                  f"{out[0].shape[1]}, {name}[{i}] has {a.shape[1]}")
        out.append(a)
    return out, names


def as_days(days: Any, n: int) -> np.ndarray:
    if days is None:
        return np.zeros(n, np.int64)
    if isinstance(days, numbers.Integral) and not isinstance(days, bool):
        days = [days] * n
    d = np.asarray(days)
    if d.ndim != 1 or d.size != n:
        raise ValidationError(f"days must hold one int per trial ({n}); got shape {d.shape}")
    if d.size and (d.dtype.kind not in "iu" or d.min() < 0):
        raise ValidationError(f"days must be integers >= 0; got {d.tolist()[:10]}")
    return d.astype(np.int64)


def as_labels(y: Any, n: int) -> list[np.ndarray]:
    if isinstance(y, (np.ndarray, str)) or not isinstance(y, Sequence):
        raise ValidationError(f"y must be a list of class-id arrays, one per trial; got {type(y).__name__}")
    if len(y) != n:
        raise ValidationError(f"y must hold one label sequence per trial ({n}); got {len(y)}")
    out = []
    for i, yi in enumerate(y):
        a = np.asarray(yi)
        if a.ndim != 1:
            raise ValidationError(f"y[{i}] must be 1-D (class ids); got shape {a.shape}")
        if a.size == 0:
            raise ValidationError(f"y[{i}] is empty; every trial needs at least one phoneme (1..{SIL})")
        if a.dtype.kind not in "iu":
            raise ValidationError(f"y[{i}] must hold integer class ids; got dtype {a.dtype}")
        if a.min() < 1 or a.max() > SIL:
            raise ValidationError(f"y[{i}] must hold class ids in 1..{SIL} (phonemes and SIL, no blank 0); "
                                  f"got values from {int(a.min())} to {int(a.max())}")
        out.append(a.astype(np.int64))
    return out


def day_stats(Xs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per feature over all bins of ``Xs`` (two passes, float64, no copy
    of the whole set); a feature with (numerically) zero spread gets scale 1."""
    n = sum(x.shape[0] for x in Xs)
    mean = sum(x.sum(axis=0, dtype=np.float64) for x in Xs) / n
    var = sum(np.square(x - mean).sum(axis=0) for x in Xs) / n
    sd = np.sqrt(var)
    return mean, np.where(sd > 1e-12 * np.maximum(1.0, np.abs(mean)), sd, 1.0)


def n_frames(n_bins: int, kernel_bins: int, stride_bins: int) -> int:
    """Output frames of a trial of ``n_bins`` bins: one per full window of ``kernel_bins``, every ``stride_bins``."""
    return 0 if n_bins < kernel_bins else (n_bins - kernel_bins) // stride_bins + 1


def ctc_min_frames(labels: np.ndarray) -> int:
    """Frames CTC needs to emit ``labels``: one per label plus one blank between equal neighbours."""
    labels = np.asarray(labels)
    return int(labels.size + np.count_nonzero(labels[1:] == labels[:-1]))


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    if a.size == 0 or b.size == 0:
        return int(max(a.size, b.size))
    prev = np.arange(b.size + 1)
    for i in range(1, a.size + 1):
        cur = np.empty_like(prev)
        cur[0] = i
        sub = prev[:-1] + (b != a[i - 1])
        dele = prev[1:] + 1
        best = np.minimum(sub, dele)
        for j in range(1, b.size + 1):          # insertions run along the row
            c = best[j - 1]
            d = cur[j - 1] + 1
            cur[j] = c if c < d else d
        prev = cur
    return int(prev[-1])


def phoneme_error_rate(refs: Sequence[np.ndarray], hyps: Sequence[np.ndarray], include_sil: bool = False) -> float:
    """Summed edit distance over summed reference length (SIL dropped from both unless ``include_sil``).

    NaN when the references hold no phoneme. Used to pick the best epoch; the task metrics
    (``tasks.speech_metrics.phoneme_error_rate``) are the figures to report.
    """
    edits = total = 0
    for r, h in zip(refs, hyps):
        r = np.asarray(r)
        h = np.asarray(h)
        if not include_sil:
            r = r[r != SIL]
            h = h[h != SIL]
        edits += edit_distance(r, h)
        total += r.size
    return edits / total if total else math.nan


def build_net(n_days: int, n_features: int, kernel_bins: int, stride_bins: int, hidden_size: int,
              n_layers: int, dropout: float, input_proj: int = 0):
    """Per-day affine (identity init) + softsign -> [shared Linear to ``input_proj``, no bias] ->
    stack ``kernel_bins`` bins every ``stride_bins`` -> GRU -> Linear."""
    import torch

    class _PhonemeNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            eye = torch.eye(n_features).repeat(n_days, 1, 1)
            self.day_weight = torch.nn.Parameter(eye)
            self.day_bias = torch.nn.Parameter(torch.zeros(n_days, n_features))
            self.drop = torch.nn.Dropout(dropout)
            self.proj = torch.nn.Linear(n_features, input_proj, bias=False) if input_proj else None
            self.gru = torch.nn.GRU((input_proj or n_features) * kernel_bins, hidden_size, num_layers=n_layers, batch_first=True,
                                    dropout=dropout if n_layers > 1 else 0.0)
            self.readout = torch.nn.Linear(hidden_size, N_CLASSES)

        def day_layer(self, x, day_idx):
            """x (B, T, F) standardised, day_idx (B,) long -> softsign(W_d x + b_d)."""
            w = self.day_weight[day_idx]                              # (B, F, F)
            a = torch.baddbmm(self.day_bias[day_idx][:, None, :], x, w.transpose(1, 2))
            return torch.nn.functional.softsign(a)

        def forward(self, x, day_idx):
            u = self.drop(self.day_layer(x, day_idx))
            if self.proj is not None:
                u = self.proj(u)
            B, F = u.shape[0], u.shape[2]
            if u.shape[1] < kernel_bins:
                return u.new_zeros((B, 0, N_CLASSES))
            s = u.unfold(1, kernel_bins, stride_bins)                 # (B, T', F, k)
            s = s.transpose(2, 3).reshape(B, s.shape[1], kernel_bins * F)   # oldest bin first
            z, _ = self.gru(s)
            return torch.log_softmax(self.readout(self.drop(z)), dim=-1)

    return _PhonemeNet()


@contextlib.contextmanager
def torch_settings(n_threads: int, deterministic: bool = True):
    """Set torch's thread count (and deterministic algorithms) for a block; restore them after."""
    import torch

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(n_threads))
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


class Augment:
    """Seeded training-time augmentation in standardised units (applied before the day layer).

    White noise (sd ``white_noise_sd`` per value), a constant offset per trial and feature (sd
    ``offset_sd``) and ``n_time_masks`` spans of up to ``time_mask_max_bins`` bins set to 0 (the
    day's mean) per trial.
    """

    def __init__(self, white_noise_sd: float, offset_sd: float, n_time_masks: int, time_mask_max_bins: int,
                 generator) -> None:
        self.white_noise_sd = white_noise_sd
        self.offset_sd = offset_sd
        self.n_time_masks = n_time_masks
        self.time_mask_max_bins = time_mask_max_bins
        self.gen = generator

    def __call__(self, x, lengths: Sequence[int]):
        import torch

        B, T, F = x.shape
        if self.white_noise_sd > 0:
            x = x + self.white_noise_sd * torch.randn(x.shape, generator=self.gen, dtype=x.dtype)
        if self.offset_sd > 0:
            x = x + self.offset_sd * torch.randn((B, 1, F), generator=self.gen, dtype=x.dtype)
        if self.n_time_masks > 0 and self.time_mask_max_bins > 0:
            keep = torch.ones((B, T, 1), dtype=x.dtype)
            widths = torch.randint(0, self.time_mask_max_bins + 1, (B, self.n_time_masks), generator=self.gen)
            starts = torch.rand((B, self.n_time_masks), generator=self.gen)
            for b in range(B):
                for m in range(self.n_time_masks):
                    w = int(widths[b, m])
                    if w and lengths[b] > w:
                        a = int(starts[b, m] * (lengths[b] - w))
                        keep[b, a:a + w] = 0.0
            x = x * keep
        return x


def _batches(idx: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length (sort within pools of 8 batches, then shuffle the batches)."""
    perm = rng.permutation(idx)
    pool = 8 * batch_size
    out = []
    for a in range(0, perm.size, pool):
        chunk = perm[a:a + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out.extend(chunk[i:i + batch_size] for i in range(0, chunk.size, batch_size))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _pad(Xn: Sequence[np.ndarray], sel: Sequence[int], dtype):
    import torch

    lens = [Xn[i].shape[0] for i in sel]
    x = np.zeros((len(sel), max(lens), Xn[sel[0]].shape[1]), np.float64 if dtype == torch.float64 else np.float32)
    for j, i in enumerate(sel):
        x[j, :lens[j]] = Xn[i]
    return torch.from_numpy(x), lens


def forward_logprobs(net, Xn: Sequence[np.ndarray], day_idx: np.ndarray, kernel_bins: int, stride_bins: int,
                     dtype, batch_size: int = 32) -> list[np.ndarray]:
    """Eval-mode log-probabilities of every trial (list of (T_i', 41) float64 arrays)."""
    import torch

    net.eval()
    out: list[np.ndarray] = [np.zeros((0, N_CLASSES))] * len(Xn)
    order = np.argsort([x.shape[0] for x in Xn], kind="stable")
    with torch.no_grad():
        for a in range(0, order.size, batch_size):
            sel = order[a:a + batch_size]
            x, lens = _pad(Xn, sel, dtype)
            lp = net(x, torch.from_numpy(np.asarray(day_idx)[sel].astype(np.int64)))
            for j, i in enumerate(sel):
                out[i] = lp[j, :n_frames(lens[j], kernel_bins, stride_bins)].double().numpy()
    return out


def train_ctc(net, params, Xn: Sequence[np.ndarray], Y: Sequence[np.ndarray], day_idx: np.ndarray,
              train_idx: np.ndarray, val_idx: np.ndarray, *, kernel_bins: int, stride_bins: int,
              n_epochs: int, batch_size: int, learning_rate: float, weight_decay: float, augment: Augment,
              rng: np.random.Generator, max_time_s: float | None = None, max_updates: int | None = None,
              progress: Callable[[dict], Any] | None = None, label: str = "PhonemeDecoder") -> dict:
    """Adam + CTC over ``train_idx`` with warm-up and cosine decay; keep the best epoch by validation PER.

    Returns a dict: ``state`` (best state_dict copy), ``history`` (train_loss, val_loss, val_per per
    epoch), ``best_epoch``, ``n_epochs``, ``n_updates``, ``seconds``.
    """
    import torch

    ctc = torch.nn.CTCLoss(blank=BLANK, reduction="mean", zero_infinity=True)
    opt = torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    lengths = np.array([x.shape[0] for x in Xn])
    per_epoch = math.ceil(train_idx.size / batch_size)
    total = per_epoch * n_epochs if max_updates is None else max_updates
    warmup = max(1, min(50, total // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda u: min(1.0, (u + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(u, total) / total))))
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_per": []}
    best: tuple[float, float, int, dict] | None = None
    t0 = time.perf_counter()
    n_updates = 0
    epoch = 0
    stop = False
    refs_val = [Y[i] for i in val_idx]
    while not stop and epoch < n_epochs:
        epoch += 1
        net.train()
        loss_sum = 0.0
        n_seen = 0
        for sel in _batches(train_idx, lengths, batch_size, rng):
            x, lens = _pad(Xn, sel, torch.float32)
            x = augment(x, lens)
            lp = net(x, torch.from_numpy(day_idx[sel].astype(np.int64)))
            in_lens = torch.tensor([n_frames(n, kernel_bins, stride_bins) for n in lens], dtype=torch.long)
            tgt = torch.from_numpy(np.concatenate([Y[i] for i in sel]).astype(np.int64))
            tgt_lens = torch.tensor([Y[i].size for i in sel], dtype=torch.long)
            loss = ctc(lp.transpose(0, 1), tgt, in_lens, tgt_lens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            n_updates += 1
            loss_sum += float(loss.detach()) * len(sel)
            n_seen += len(sel)
            if (max_updates is not None and n_updates >= max_updates) or \
                    (max_time_s is not None and time.perf_counter() - t0 > max_time_s):
                stop = True
                break
        history["train_loss"].append(loss_sum / max(n_seen, 1))
        if val_idx.size:
            lp_val = forward_logprobs(net, [Xn[i] for i in val_idx], day_idx[val_idx], kernel_bins, stride_bins,
                                      torch.float32)
            hyps = [collapse_ctc(lp.argmax(axis=1)) for lp in lp_val]
            per = phoneme_error_rate(refs_val, hyps)
            with torch.no_grad():
                vl = [float(ctc(torch.from_numpy(lp[:, None, :]), torch.from_numpy(Y[i].astype(np.int64))[None],
                                torch.tensor([lp.shape[0]]), torch.tensor([Y[i].size])))
                      for lp, i in zip(lp_val, val_idx)]
            vloss = float(np.mean(vl))
        else:
            per, vloss = math.nan, math.nan
        history["val_loss"].append(vloss)
        history["val_per"].append(per)
        key = (per, vloss) if val_idx.size else (0.0, 0.0)
        if best is None or (val_idx.size and key < best[:2]) or not val_idx.size:
            best = (key[0], key[1], epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
        info = {"epoch": epoch, "n_epochs": n_epochs, "train_loss": history["train_loss"][-1], "val_loss": vloss,
                "val_per": per, "seconds": time.perf_counter() - t0, "n_updates": n_updates}
        logger.debug("%s epoch %d: %s", label, epoch, info)
        if progress is not None:
            progress(info)
    assert best is not None       # the first epoch always sets it (n_epochs >= 1)  # nosec B101
    return {"state": best[3], "history": history, "best_epoch": best[2], "n_epochs": epoch,
            "n_updates": n_updates, "seconds": time.perf_counter() - t0}
