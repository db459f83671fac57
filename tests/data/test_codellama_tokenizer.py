"""tools/build_codellama_tokenizer.py: the 16 Code Llama pieces at their ids, used by id."""

import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

sys.path.insert(0, str(Path(__file__).parent))
from spm_fixtures import multilingual_texts, stdlib_texts, tiny_model, train_model, training_sentences  # noqa: E402

import megacode.tokenizer as T  # noqa: E402
from megacode.tokenizer.codellama import CODELLAMA_EXTRA_PIECES, extend_with_infill_pieces  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "build_codellama_tokenizer.py"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("codellama") / "tokenizer.model"
    proc = subprocess.run([sys.executable, str(TOOL), "--input", str(tiny_model()), "--output", str(out),
                           "--allow-non-llama-base"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "<PRE>=2007 <SUF>=2008 <MID>=2009 <EOT>=2010" in proc.stdout
    return out


def test_pieces_land_at_base_plus_offsets(built):
    base = spm.SentencePieceProcessor(model_file=str(tiny_model()))
    sp = spm.SentencePieceProcessor(model_file=str(built))
    n = base.vocab_size()
    assert sp.vocab_size() == n + 16
    assert [sp.id_to_piece(n + k) for k in range(16)] == list(CODELLAMA_EXTRA_PIECES)
    assert [sp.id_to_piece(n + k) for k in (7, 8, 9, 10)] == ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]
    # Everything below the base vocabulary is untouched.
    assert all(sp.id_to_piece(i) == base.id_to_piece(i) and sp.get_score(i) == base.get_score(i)
               for i in range(n))
    proto = pb.ModelProto()
    proto.ParseFromString(built.read_bytes())
    assert proto.trainer_spec.vocab_size == n + 16
    assert all(p.type == pb.ModelProto.SentencePiece.NORMAL for p in proto.pieces[n:])
    assert max(p.score for p in proto.pieces[n:]) < min(p.score for p in proto.pieces[:n] if p.type == 1)


def test_tokenizer_exposes_infill_ids_and_decodes_them(built):
    tok = T.load(built)
    assert (tok.pre_id, tok.suf_id, tok.mid_id, tok.eot_id) == (2007, 2008, 2009, 2010)
    assert tok.has_infill and tok.backend == "megacode"
    prefix, middle, suffix = "def add(a, b):\n    ", "return a + b", "\n\nprint(add(1, 2))\n"
    # PSM layout, built by id (DESIGN.md §1).
    ids = ([tok.bos_id, tok.pre_id] + tok.encode(prefix) + [tok.suf_id] + tok.encode_infill(suffix)
           + [tok.mid_id] + tok.encode_infill(middle) + [tok.eot_id])
    text = tok.decode(ids)
    for piece in ("<PRE>", "<SUF>", "<MID>", "<EOT>"):
        assert piece in text
    assert tok.decode([tok.pre_id]) == "<PRE>" and tok.id_to_piece(tok.eot_id) == "▁<EOT>"
    # Text that does not spell the pieces encodes exactly as with the base model.
    base = T.load(tiny_model())
    for t in multilingual_texts(50, seed=9) + stdlib_texts(300_000):
        assert tok.encode(t) == base.encode(t)


def test_extended_model_parity_with_binding(built):
    texts = multilingual_texts(200, seed=8) + ["x <PRE> y <SUF> z <MID> w <EOT><EOT>", " <EOT> <PRE>"]
    sp = spm.SentencePieceProcessor(model_file=str(built))
    flat, lengths = T.load(built).encode_batch(texts)
    assert flat.tolist() == [i for t in texts for i in sp.encode(t)]


def test_refuses_non_llama_base_without_flag_and_double_extension(built, tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--input", str(tiny_model()), "--output", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "has 2000 pieces, Llama 2's tokenizer has 32000" in proc.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="already has"):
        extend_with_infill_pieces(built.read_bytes(), allow_non_llama_base=True)
    unigram = train_model(training_sentences(300_000), 1000, model_type="unigram")
    with pytest.raises(ValueError, match="UNIGRAM"):
        extend_with_infill_pieces(Path(unigram).read_bytes(), allow_non_llama_base=True)


def test_llama_sized_base_needs_no_flag(tmp_path):
    # A 32,000-piece base (Llama 2's size) is accepted as is; ids land at 32007..32010.
    proto = pb.ModelProto()
    proto.ParseFromString(Path(tiny_model()).read_bytes())
    n = len(proto.pieces)
    for k in range(32000 - n):
        p = proto.pieces.add()
        p.piece, p.score, p.type = f"filler{k}", -1e6 - k, pb.ModelProto.SentencePiece.NORMAL
    extended = extend_with_infill_pieces(proto.SerializeToString())
    sp = spm.SentencePieceProcessor(model_proto=extended)
    assert [sp.piece_to_id(p) for p in ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")] == [32007, 32008, 32009, 32010]
    assert sp.vocab_size() == 32016
