"""A slow, independent FIM reference for the tests: the SentencePiece Python binding and plain
Python, written from DESIGN.md §1 and the formula in csrc/fim.cpp's header, sharing no code
with megacode's transform.

    ref = Reference(model_path)
    ref.layout(text, lo, hi, spm)                     # one document's transformed ids
    ref.sample(fim_dataset, i)                         # sample i of a FimDataset, packed
    ref.parse(ids, spm_layout)                         # a transformed document's parts
"""

from __future__ import annotations

from typing import List, Optional

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

MASK = (1 << 64) - 1
G = 0x9E3779B97F4A7C15


def mix(z: int) -> int:
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def draws(seed: int, sample: int, piece: int, doc: int) -> List[int]:
    key = mix(seed + G) ^ sample
    key = mix(key + G) ^ piece
    key = mix(key + G) ^ doc
    return [mix(key + (j + 1) * G) for j in range(4)]


def unit(d: int) -> float:
    return (d >> 11) / 2.0**53


class Reference:
    def __init__(self, model_path) -> None:
        data = open(model_path, "rb").read()
        self.sp = spm.SentencePieceProcessor()
        self.sp.LoadFromSerializedProto(data)
        proto = pb.ModelProto()
        proto.ParseFromString(data)
        proto.normalizer_spec.add_dummy_prefix = False  # enc': no implicit leading space
        self.sp_infill = spm.SentencePieceProcessor()
        self.sp_infill.LoadFromSerializedProto(proto.SerializeToString())
        ids = [self.sp.piece_to_id(p) for p in ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")]
        self.pre, self.suf, self.mid, self.eot = ids
        self.bos, self.eos = self.sp.bos_id(), self.sp.eos_id()

    def enc(self, s: str) -> List[int]:
        return self.sp.encode(s) if s else []

    def enc_infill(self, s: str) -> List[int]:
        return self.sp_infill.encode(s) if s else []

    def meta_enc_infill(self, s: str) -> List[int]:
        """Meta's `encode_infilling`: encode "☺" + s and drop "▁" and "☺"."""
        return self.sp.encode("☺" + s)[2:]

    def layout(self, text: str, lo: int, hi: int, spm_layout: bool) -> List[int]:
        prefix, middle, suffix = text[:lo], text[lo:hi], text[hi:]
        if spm_layout:
            return ([self.pre, self.suf] + self.enc_infill(suffix) + [self.mid] + self.enc(prefix + middle)
                    + [self.eot])
        return ([self.pre] + self.enc(prefix) + [self.suf] + self.enc_infill(suffix) + [self.mid]
                + self.enc_infill(middle) + [self.eot])

    def decode_clean(self, ids: List[int]) -> Optional[str]:
        """The binding's decode when every id is a text or byte piece and byte runs are valid UTF-8."""
        sp, run = self.sp, b""
        for i in ids:
            if not 0 <= i < sp.vocab_size() or sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                return None
            if sp.is_byte(i):
                run += bytes([int(sp.id_to_piece(i)[3:5], 16)])
                continue
            try:
                run.decode("utf-8")
            except UnicodeDecodeError:
                return None
            run = b""
        try:
            run.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return sp.decode(ids)

    def document(self, ids: List[int], seed: int, sample: int, piece: int, doc: int, rate: float,
                 spm_rate: float) -> List[int]:
        """A whole document's ids after the transform (or as stored)."""
        d = draws(seed, sample, piece, doc)
        if not unit(d[0]) < rate:
            return ids
        head = ids[:1] if ids and ids[0] == self.bos else []
        tail = ids[-1:] if len(ids) > len(head) and ids[-1] == self.eos else []
        text = self.decode_clean(ids[len(head):len(ids) - len(tail)])
        if text is None:
            return ids
        n = len(text)
        a, b = (d[2] * (n + 1)) >> 64, (d[3] * (n + 1)) >> 64
        return head + self.layout(text, min(a, b), max(a, b), unit(d[1]) < spm_rate) + tail

    def sample(self, ds, i: int) -> List[int]:
        """Sample i of FimDataset `ds`, re-derived from its packed dataset's arrays."""
        return self.sample_parts(ds, i)[0]

    def sample_parts(self, ds, i: int) -> tuple:
        """(sample i's ids, per piece (document, start, end, whole, ids before packing, [lo, hi) kept))."""
        packed = ds.packed
        sizes = packed.indexed.sequence_lengths
        parts = []
        for k, (d, s, e) in enumerate(packed.pieces(i)):
            ids = packed.indexed.get(d, s, e - s).tolist()
            whole = s == 0 and e == sizes[d]
            full = self.document(ids, ds.seed, i, k, d, ds.rate, ds.spm_rate) if whole else ids
            parts.append([d, s, e, whole, full, 0, len(full)])
        target = packed.seq_length + 1
        excess = sum(len(p[4]) for p in parts) - target
        if excess >= 0:
            # Dropped first from the documents cut across contexts at both ends, then from the end.
            if len(parts) > 1 and not parts[-1][3]:
                n = min(excess, parts[-1][6])
                parts[-1][6], excess = parts[-1][6] - n, excess - n
            if len(parts) > 1 and not parts[0][3]:
                n = min(excess, parts[0][6])
                parts[0][5], excess = n, excess - n
            for p in reversed(parts):
                n = min(excess, p[6] - p[5])
                p[6], excess = p[6] - n, excess - n
            return sum((p[4][p[5]:p[6]] for p in parts), []), parts
        out = sum((p[4] for p in parts), [])
        # Short: continue with the stored stream after the sample's last token.
        row = int(packed.shuffle_index[i]) + 1
        k, offset = (int(v) for v in packed.sample_index[row])
        order = packed.document_order
        stream = packed.indexed.get(int(order[k])).tolist()[offset + 1:]
        while len(out) + len(stream) < target:
            k = (k + 1) % len(order)
            stream += packed.indexed.get(int(order[k])).tolist()
        return out + stream[:target - len(out)], parts

    def parse(self, ids: List[int], spm_layout: bool) -> tuple:
        """(prefix, middle, suffix) texts of one transformed document's ids (no BOS/EOS); in SPM
        prefix + middle come back together as `prefix` and middle is "". The layout must be given:
        PSM with an empty prefix starts <PRE> <SUF> like SPM."""
        assert ids[0] == self.pre and ids[-1] == self.eot and ids.count(self.mid) == 1, ids
        s, m = ids.index(self.suf), ids.index(self.mid)
        if spm_layout:
            assert s == 1, ids
            return self.sp.decode(ids[m + 1:-1]), "", self.sp_infill.decode(ids[2:m])
        return self.sp.decode(ids[1:s]), self.sp_infill.decode(ids[m + 1:-1]), self.sp_infill.decode(ids[s + 1:m])
