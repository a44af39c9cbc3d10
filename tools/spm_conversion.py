"""A trained sentencepiece model -> a `tokenizers` Tokenizer (tokenizer.json).

transformers' SpmConverter does this conversion, but it reads the model with
protobuf, which is not installed here. The pieces, scores and types come
from sentencepiece's own processor API; only the normalizer settings (the
precompiled NFKC charsmap and the whitespace flags) have no API, so they are
read from the serialized model with a minimal protobuf wire-format reader
(field numbers from sentencepiece_model.proto). The conversion itself is
transformers' `SpmConverter.build_tokenizer_from_spm_proto`.
"""
from types import SimpleNamespace

# sentencepiece_model.proto: ModelProto.normalizer_spec = 3; NormalizerSpec
# fields 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
# 4 remove_extra_whitespaces, 5 escape_whitespaces (bools default true).
_MODEL_NORMALIZER_SPEC = 3
_SPEC_FIELDS = {1: "name", 2: "precompiled_charsmap", 3: "add_dummy_prefix",
                4: "remove_extra_whitespaces", 5: "escape_whitespaces"}
# sentencepiece_model.proto: SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _varint(buf: bytes, pos: int):
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """(field_number, value) of one serialized message; values are int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def normalizer_spec(model_bytes: bytes) -> SimpleNamespace:
    spec = {"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": True,
            "remove_extra_whitespaces": True, "escape_whitespaces": True}
    for number, value in _fields(model_bytes):
        if number == _MODEL_NORMALIZER_SPEC:
            for sub, sub_value in _fields(value):
                name = _SPEC_FIELDS.get(sub)
                if name == "name":
                    spec[name] = sub_value.decode()
                elif name == "precompiled_charsmap":
                    spec[name] = sub_value
                elif name:
                    spec[name] = bool(sub_value)
    return SimpleNamespace(**spec)


def _piece_type(sp, i: int) -> int:
    if sp.is_unknown(i):
        return UNKNOWN
    if sp.is_control(i):
        return CONTROL
    if sp.is_unused(i):
        return UNUSED
    if sp.is_byte(i):
        return BYTE
    return NORMAL


def spm_to_tokenizer(model_bytes: bytes, model_type: str, unk_piece: str):
    """`tokenizers.Tokenizer` equivalent to the sentencepiece model (unigram or bpe)."""
    import sentencepiece as spm
    from transformers.convert_slow_tokenizer import SpmConverter

    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    pieces = [SimpleNamespace(piece=sp.id_to_piece(i), score=sp.get_score(i), type=_piece_type(sp, i))
              for i in range(sp.get_piece_size())]
    proto = SimpleNamespace(
        pieces=pieces,
        normalizer_spec=normalizer_spec(model_bytes),
        trainer_spec=SimpleNamespace(byte_fallback=False, unk_piece=unk_piece, unk_id=sp.unk_id(),
                                     model_type=1 if model_type == "unigram" else 2),
    )
    if model_type == "unigram":
        vocab = [(p.piece, p.score) for p in pieces]
    else:
        vocab = {p.piece: i for i, p in enumerate(pieces)}
    return SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
