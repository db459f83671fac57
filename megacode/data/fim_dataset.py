"""On-the-fly FIM over packed samples, and `data.fim` from the run config.

    FimDataset(packed, tok, rate=0.9, spm_rate=0.5)[i] -> [seq_length + 1] int64

Sample i of the packed dataset is a run of (document, start, end) pieces. Whole documents
(start 0, end = its length: not cut across contexts) are transformed by csrc/fim.cpp with
probability `rate`, the others are copied as stored. A transformed document changes length
(4 special tokens, plus the tokens the split points cut), so the sample is packed back to
exactly `seq_length + 1` tokens, keeping the positions where the next samples start:

- longer: the excess is *dropped* from the documents that are cut across contexts anyway: first
  from the end of the sample's last piece, then from the start of its first piece; only when
  those are too short, from the end of the whole documents before (a transformed one then loses
  its <EOT>). Dropped tokens are counted and reported as a share of all sample tokens (with
  documents of ~800 tokens at seq 4096, about 0.5%: tools/bench_fim.py);
- shorter (rare: a re-encoding shorter than the stored ids): the stream continues past the
  sample's end (the tokens the next sample starts with; past the last epoch, the order's start).

Documents that are not transformed are never altered, only shortened at the sample's ends.
Every choice is a function of (seed, sample index, piece, document) (csrc/fim.cpp gives the
formula), so any worker count, a resumed run and a re-sharded run read identical samples.
Training and validation samples alike are transformed. Blends get one FimDataset per text
component; `kind: dialog` (instruct) components and the synthetic stream are left alone.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megacode.data import fim
from megacode.data.blend import BlendedDataset
from megacode.data.gpt_dataset import PackedDataset
from megacode.data.index_cache import derive_seed

log = logging.getLogger("megacode")

COUNTER_NAMES = ("samples", "sample_tokens", *fim.STAT_NAMES)
PIECE_KINDS = ("as stored", "FIM PSM", "FIM SPM", "as stored (drawn, but its ids do not decode losslessly)")


class FimStats:
    """Running counters (thread-safe), named in COUNTER_NAMES: samples and their tokens, then the
    C++ counters of `fim.STAT_NAMES` (`dropped`: tokens cut to keep samples at seq_length + 1,
    `continued`: tokens read past a sample's end, `whole_cut`: whole documents shortened)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, sample_tokens: int, counters: np.ndarray) -> None:
        with self._lock:
            c = self.counts
            c["samples"] += 1
            c["sample_tokens"] += sample_tokens
            for name, value in zip(fim.STAT_NAMES, counters.tolist()):
                c[name] += value

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def describe(self) -> str:
        c = self.snapshot()

        def pct(a: int, b: int) -> str:
            return f"{100.0 * a / b:.2f}%" if b else "n/a"

        return (f"{c['transformed']}/{c['eligible']} whole documents transformed ({pct(c['transformed'], c['eligible'])}), "
                f"{pct(c['spm'], c['transformed'])} of them SPM, {c['unclean']} left as stored (ids that do not "
                f"decode losslessly); {c['dropped']} of {c['sample_tokens']} sample tokens dropped "
                f"({pct(c['dropped'], c['sample_tokens'])}; {c['whole_cut']} whole documents shortened), "
                f"{c['continued']} read past sample ends, over {c['samples']} samples")


class FimDataset:
    """`packed`'s samples with Code Llama's FIM applied to whole documents (module docstring).

    Args:
        packed: the PackedDataset to transform.
        tokenizer: a `megacode.tokenizer.Tokenizer` with the infilling pieces; the dataset's
            ids must come from it (its text is recovered by decoding them).
        rate: probability of transforming a whole document (`data.fim.rate`).
        spm_rate: share of transformed documents laid out SPM (`data.fim.spm_rate`).
        seed: of the random choices; default derived from the packed dataset's seed.
    """

    def __init__(self, packed: PackedDataset, tokenizer, rate: float = 0.9, spm_rate: float = 0.5,
                 seed: Optional[int] = None) -> None:
        if not isinstance(packed, PackedDataset):
            raise TypeError(f"FimDataset wraps a PackedDataset, got {packed!r}")
        if not (0.0 <= rate <= 1.0 and 0.0 <= spm_rate <= 1.0):
            raise ValueError(f"FIM rate and spm_rate must be in [0, 1], got {rate}, {spm_rate}")
        self.packed = packed
        self.tokenizer = tokenizer
        self.rate, self.spm_rate = float(rate), float(spm_rate)
        self.seed = derive_seed(packed.seed, "fim") if seed is None else int(seed)
        self.seq_length = packed.seq_length
        self._bind()
        with open(tokenizer.model_path, "rb") as f:
            model_digest = hashlib.sha256(f.read()).hexdigest()
        self._key = hashlib.sha256(repr((packed.cache_key, "fim", self.rate, self.spm_rate, self.seed,
                                         model_digest)).encode()).hexdigest()

    def _bind(self) -> None:
        """The C++ transform and plain-array views of the packed dataset's arrays (indexing numpy
        memmaps row by row is slow: their subclass hook runs on every view)."""
        self.stats = FimStats()
        self._core = fim.fim_core(self.tokenizer)  # also checks the infilling pieces
        ds, p = self.packed.indexed, self.packed
        self._tokens = ds._tokens  # [T] the .bin's ids, zero-copy
        self._order = np.asarray(p.document_order)  # [E * N]
        self._rows = np.asarray(p.sample_index)  # [M + 1, 2]
        self._shuffle = np.asarray(p.shuffle_index)  # [M]
        if not self._order.size:
            self._order = np.zeros(0, np.int32)
        name = f"sample_{self._tokens.dtype.name}_{self._order.dtype.name}"  # the C++ template instance
        if not hasattr(self._core, name):
            raise ValueError(f"{ds.prefix}: FIM reads uint16, int32 or int64 token files, this one is "
                             f"{self._tokens.dtype.name}")
        self._sample = getattr(self._core, name)

    # What the loader, blends and provenance use.
    @property
    def indexed(self):
        return self.packed.indexed

    @property
    def cache(self):
        return self.packed.cache

    @property
    def cache_key(self) -> str:
        return self._key

    def __len__(self) -> int:
        return len(self.packed)

    def pieces(self, i: int) -> List[Tuple[int, int, int]]:
        """The stored (document, start, end) spans sample i is made from (before the transform:
        positions after a transformed document are shifted in the sample; see `layout`)."""
        return self.packed.pieces(i)

    def __getitem__(self, i: int) -> np.ndarray:
        """Sample i: `[seq_length + 1]` int64 ids."""
        return self._build(i, self.stats)[0]

    can_read_batch = True

    def read_batch(self, ids: Sequence[int]) -> np.ndarray:
        """Samples `ids` as one `[len(ids), seq_length + 1]` int64 array (a C++ call per sample,
        each with the GIL released)."""
        out = np.empty((len(ids), self.seq_length + 1), dtype=np.int64)
        for r, i in enumerate(ids):
            out[r] = self._build(int(i), self.stats)[0]
        return out

    def sample(self, i: int, stats: Optional[FimStats] = None) -> np.ndarray:
        """Sample i, its counters added to `stats` when given."""
        return self._build(i, stats)[0]

    def layout(self, i: int) -> List[Tuple[Tuple[int, int, int], int, int, str]]:
        """Where each stored piece of sample i went: ((document, start, end of the stored tokens
        kept), first, last + 1 sample position, what was done: one of PIECE_KINDS, plus the tokens
        the packing dropped from it); a shortfall read past the sample's end comes last as
        ((-1, 0, n), first, last + 1, "read past the sample end")."""
        _, pieces, counters = self._build(i, None)
        pos, out = 0, []
        for doc, start, end, n, kind, cut in pieces.tolist():
            out.append(((doc, start, end), pos, pos + n, PIECE_KINDS[kind] + (f", {cut} dropped by the packing" if cut else "")))
            pos += n
        continued = int(counters[fim.STAT_NAMES.index("continued")])
        if continued:
            out.append(((-1, 0, continued), pos, pos + continued, "read past the sample end"))
        return out

    def _build(self, i: int, stats: Optional[FimStats]) -> tuple:
        """(ids [seq_length + 1] int64, pieces [P, 6], counters) of sample i (one C++ call, GIL released)."""
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.packed.indexed.prefix}: sample {i} out of range [0, {n})")
        s = int(self._shuffle[i])
        (k0, off0), (k1, off1) = self._rows[s].tolist(), self._rows[s + 1].tolist()
        target = self.seq_length + 1
        out, counters, pieces = self._sample(self._tokens, self.indexed.sequence_pointers, self.indexed.sequence_lengths,
                                             self._order, k0, off0, k1, off1, target, self.seed, i, self.rate,
                                             self.spm_rate)
        if stats is not None:
            stats.add(target, counters)
        return out, pieces, counters

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("stats", "_core", "_tokens", "_order", "_rows", "_shuffle", "_sample"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)  # the packed dataset re-maps its arrays, the tokenizer reloads
        self._bind()

    def __repr__(self) -> str:
        return f"FimDataset(rate={self.rate}, spm_rate={self.spm_rate}, {self.packed!r})"


# Wrapping datasets and the run config ---------------------------------------------------------

def apply_fim(dataset, tokenizer, rate: float, spm_rate: float):
    """`dataset` with every PackedDataset in it wrapped in a FimDataset (blends are changed in place);
    other datasets (instruct dialogs, synthetic) as they are. None stays None."""
    if isinstance(dataset, PackedDataset):
        return FimDataset(dataset, tokenizer, rate, spm_rate)
    if isinstance(dataset, BlendedDataset):
        dataset.datasets = [apply_fim(d, tokenizer, rate, spm_rate) for d in dataset.datasets]
    return dataset


def fim_parts(dataset) -> List[FimDataset]:
    """The FimDatasets in `dataset` (itself, or a blend's components)."""
    if isinstance(dataset, FimDataset):
        return [dataset]
    return [p for d in getattr(dataset, "datasets", []) for p in fim_parts(d)]


def probe(dataset, num_samples: int = 32) -> FimStats:
    """Counters of `num_samples` samples spread over `dataset` (for the data summary)."""
    stats = FimStats()
    for part in fim_parts(dataset):
        n = len(part)
        for i in sorted({int(k * n / num_samples) for k in range(min(num_samples, n))}):
            part.sample(i, stats)
    return stats


def load_fim_tokenizer(data_cfg):
    """The tokenizer of `data.tokenizer_model`, checked for FIM (ConfigError otherwise)."""
    from megacode.config import ConfigError
    from megacode.tokenizer import load

    if not data_cfg.tokenizer_model:
        raise ConfigError("data.fim.enabled=true needs data.tokenizer_model (the Code Llama tokenizer the data "
                          "was tokenized with): FIM decodes documents and inserts <PRE>/<SUF>/<MID>/<EOT> by id")
    try:
        tok = load(data_cfg.tokenizer_model)
        fim.require_infill(tok, "data.fim.enabled=true")
        fim.fim_core(tok)
    except (ValueError, OSError) as e:
        raise ConfigError(f"data.tokenizer_model={data_cfg.tokenizer_model}: {e}") from None
    return tok


def with_fim(data_cfg, train, valid):
    """(train, valid) with `data.fim` applied when enabled; logs the FIM line of the data summary
    (counters of a probe of the training samples, the dropped-token share among them)."""
    if not data_cfg.fim.enabled or train is None:
        return train, valid
    tok = load_fim_tokenizer(data_cfg)
    rate, spm_rate = data_cfg.fim.rate, data_cfg.fim.spm_rate
    train = apply_fim(train, tok, rate, spm_rate)
    valid = apply_fim(valid, tok, rate, spm_rate)
    parts = fim_parts(train)
    if not parts:
        log.warning("data.fim.enabled=true but no text dataset to transform (dialog data only): FIM does nothing")
        return train, valid
    log.info("data: FIM on %d dataset(s), rate %.3g, SPM %.3g, ids <PRE> %d <SUF> %d <MID> %d <EOT> %d; probe: %s",
             len(parts), rate, spm_rate, tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id, probe(train).describe())
    return train, valid


def mark_fim_sample(view, dataset, i: int) -> str:
    """For tools/inspect_data.py: when sample i of `dataset` comes from a FimDataset, move the
    view's ⟦doc D @offset⟧ markers to where each piece landed after the transform and return
    lines saying what happened to each piece; "" otherwise."""
    from megacode.data.provenance import source_of

    _, leaf, j = source_of(dataset, i)
    if not isinstance(leaf, FimDataset):
        return ""
    starts, lines = [], ["FIM pieces (sample positions after the transform):"]
    for (doc, start, end), first, last, what in leaf.layout(j):
        if doc >= 0:
            starts.append((first, f"⟦doc {doc} @{start}⟧"))
            lines.append(f"  sample tokens [{first}, {last})  document {doc}  tokens [{start}, {end})  {what}")
        else:
            lines.append(f"  sample tokens [{first}, {last})  {what}")
    others = [m for m in view.markers if not m[1].startswith("⟦doc ")]
    view.markers = sorted(starts + others, key=lambda m: m[0])  # stable: a document start first
    return "\n" + "\n".join(lines)
