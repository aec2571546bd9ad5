"""OpenAI's tokenizers, offline.

tiktoken (OpenAI's own tokenizer) normally downloads its rank files on first use; the gateway
never reaches the network for them. It reads the copies bundled in the `bpe-openai` wheel instead,
checks each against the SHA-256 tiktoken itself expects for that file, and builds the encoding with
tiktoken. The patterns and special tokens below are tiktoken's (`tiktoken_ext.openai_public`); a
test checks they still match the installed tiktoken.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path
from types import MappingProxyType

import tiktoken
from tiktoken.model import encoding_name_for_model

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    name: str
    sha256: str  # of the uncompressed rank file, as tiktoken expects it
    pat_str: str
    special_tokens: MappingProxyType[str, int]


_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)

SPECS: dict[str, EncodingSpec] = {
    "o200k_base": EncodingSpec(
        "o200k_base",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        _O200K_PATTERN,
        MappingProxyType({_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018}),
    ),
    "cl100k_base": EncodingSpec(
        "cl100k_base",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        _CL100K_PATTERN,
        MappingProxyType(
            {
                _ENDOFTEXT: 100257,
                "<|fim_prefix|>": 100258,
                "<|fim_middle|>": 100259,
                "<|fim_suffix|>": 100260,
                _ENDOFPROMPT: 100276,
            }
        ),
    ),
}

_loaded: dict[str, tiktoken.Encoding] = {}
_lock = threading.Lock()


def encoding_for_model(model: str) -> str | None:
    """The name of the offline encoding OpenAI uses for `model`, or None when there is none."""
    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return None
    return name if name in SPECS else None


def get_encoding(name: str) -> tiktoken.Encoding:
    """The encoding, loaded once per process on first use: about 0.3 s and 75 MB for
    o200k_base, so the async paths load it in a worker thread (`count.py`)."""
    found = _loaded.get(name)
    if found is not None:
        return found
    with _lock:
        found = _loaded.get(name)
        if found is None:
            found = _loaded[name] = _build(SPECS[name])
    return found


def is_loaded(name: str) -> bool:
    return name in _loaded


def rank_file(spec: EncodingSpec) -> bytes:
    """The uncompressed rank file, verified against tiktoken's expected hash."""
    path = Path(str(distribution("bpe-openai").locate_file(f"bpe_openai/data/{spec.name}.tiktoken.gz")))
    data = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise RuntimeError(f"bundled {spec.name} rank file has SHA-256 {digest}, expected {spec.sha256}")
    return data


def _build(spec: EncodingSpec) -> tiktoken.Encoding:
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in rank_file(spec).splitlines() if line)
    }
    return tiktoken.Encoding(
        spec.name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens)
    )
