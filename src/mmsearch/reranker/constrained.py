"""Constrained decoding of the ranking JSON with outlines_core: a transformers `LogitsProcessor` that masks every
token the per-request schema (`schema.ranking_schema`) does not allow, any id already used in the ranking (so the
array is a permutation by construction), and any token that would push the reasons past their bound (so the JSON
always closes within `token_budget`). Entry point: `RankingConstraint.build(tokenizer, k, ...)`.

Costs, measured with the 32k Phi-3 vocabulary on 2 shared CPU cores: the outlines_core `Vocabulary` is built once
per tokenizer (~0.7 s, cached); the regex `Index` depends on k only (~140 ms, cached per k). Putting the reasons
bound into the regex instead (`{0,114}`) made each index ~1.4 s, so the bound is a vectorised length mask here.
Per step the mask costs one bitmask write (host, 4 bytes per 32 tokens) and an unpack plus the unused-id and
reasons rules as tensor lookups on the logits' device: no Python loop over allowed ids, and one host read per step
(the last token, which the host-side outlines_core FSM must see). `benchmarks/rerank_latency.py` reports the cost
per token against a decode step (0.06% at full size on CPU).
"""

from __future__ import annotations

import json
import re
import threading
import time
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from outlines_core import Guide, Index, Vocabulary
from outlines_core.json_schema import build_regex_from_schema
from transformers import LogitsProcessor

from mmsearch.errors import RerankError
from mmsearch.reranker.schema import candidate_ids, max_output_chars, ranking_schema

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPIECE_SPACE = "\u2581"  # "▁", sentencepiece's word-start marker
_REASONS_OPEN = ',"reasons":"'  # what follows the ranking's "]" up to the first reasons character


@dataclass(frozen=True)
class TokenTable:
    """What each token id emits as bytes (None for special tokens) and the outlines_core vocabulary."""

    token_bytes: list[bytes | None]
    vocabulary: Vocabulary
    eos_token_id: int
    _added: dict = field(default_factory=dict, repr=False)

    def reasons_added(self, opened: str) -> torch.Tensor:
        """Per token id, how many reasons characters it would write after `opened`, the part of `_REASONS_OPEN`
        (or all of it) already written; int32 of len(token_bytes). Tokens can open the string and carry text
        with them (`",`), so the count starts wherever the opening quote falls. Cached per `opened`."""
        if opened not in self._added:
            counts = []
            for data in self.token_bytes:
                if data is None:
                    counts.append(
                        1 << 30
                    )  # special tokens: no bound admits them (the schema masks them anyway)
                    continue
                text = opened + data.decode("latin-1")
                if len(text) <= len(_REASONS_OPEN) or not text.startswith(_REASONS_OPEN):
                    counts.append(0)  # still inside the fixed key (or not allowed by the schema at all)
                    continue
                counts.append(len(text[len(_REASONS_OPEN) :].split('"', 1)[0]))
            self._added[opened] = torch.tensor(counts, dtype=torch.int32)
        return self._added[opened]

    def array_pieces(self) -> ArrayPieces:
        """Each token's effect inside the ranking array, parsed once per table (see `ArrayPieces`)."""
        if "pieces" not in self._added:
            self._added["pieces"] = ArrayPieces.parse(self.token_bytes)
        return self._added["pieces"]

    def warm(self) -> None:
        """Compute `reasons_added` for every prefix of the key now (~0.1 s each at 32k tokens) instead of mid-request."""
        for n in range(len(_REASONS_OPEN) + 1):
            self.reasons_added(_REASONS_OPEN[:n])
        self.array_pieces()


# What a token spells inside the ranking array, reduced to the characters that matter there (digits, "," and "]"):
# its leading digits, then the first separator. Longer digit runs than any id cannot extend an id.
_SEP_NONE, _SEP_COMMA, _SEP_CLOSE, _SEP_COMPLEX = 0, 1, 2, 3
_MAX_DIGITS = 3


@dataclass(frozen=True)
class ArrayPieces:
    """Per token id: `digits` (index into `strings`, the distinct leading digit runs) and `sep` (none, ",", "]",
    or complex: more digits after a ","). Lets the unused-id rule run as tensor lookups instead of a Python loop
    over the allowed tokens; only complex tokens (none in Phi-3's vocabulary, which splits digits) are checked one
    by one, from the fixed list `complex_ids`."""

    strings: list[str]
    digits: torch.Tensor  # int64 (vocab,)
    sep: torch.Tensor  # int64 (vocab,)
    complex_ids: list[int]

    @classmethod
    def parse(cls, token_bytes: list[bytes | None]) -> ArrayPieces:
        index: dict[str, int] = {"": 0}
        digits, seps, complex_ids = [], [], []
        for token_id, data in enumerate(token_bytes):
            kept = "".join(c for c in (data or b"").decode("latin-1") if c.isdigit() or c in ",]")
            run = len(kept) - len(kept.lstrip("0123456789"))
            lead, rest = kept[:run], kept[run:]
            sep = {"": _SEP_NONE, ",": _SEP_COMMA, "]": _SEP_CLOSE}.get(rest[:1], _SEP_COMPLEX)
            if rest.startswith(",") and len(rest) > 1:
                sep = _SEP_COMPLEX
            if sep == _SEP_COMPLEX:
                complex_ids.append(token_id)
            if len(lead) > _MAX_DIGITS:
                lead = "x"  # extends no id
            digits.append(index.setdefault(lead, len(index)))
            seps.append(sep)
        return cls(list(index), torch.tensor(digits), torch.tensor(seps), complex_ids)


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable stand-in character for each byte value."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _token_bytes(tokenizer) -> list[bytes | None]:
    """Bytes emitted by every token id; special and added tokens map to None (never allowed by the constraint)."""
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    byte_level = "ByteLevel" in json.dumps(decoder)
    byte_map = _byte_level_decoder() if byte_level else {}
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    table: list[bytes | None] = [None] * size
    for token, idx in vocab.items():
        if idx in special:
            continue
        if byte_level:
            try:
                data = bytes(byte_map[c] for c in token)
            except KeyError:
                continue
        elif m := _BYTE_TOKEN.match(token):
            data = bytes([int(m.group(1), 16)])
        else:
            data = token.replace(_SPIECE_SPACE, " ").encode("utf-8")
        if data:
            table[idx] = data
    return table


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def token_table(tokenizer, eos_token_id: int) -> TokenTable:
    """The cached `TokenTable` of a tokenizer, with `eos_token_id` as the one token that ends an answer."""
    with _LOCK:
        per_tok = _TABLES.setdefault(tokenizer, {})
        if eos_token_id not in per_tok:
            table = _token_bytes(tokenizer)
            grouped: dict[bytes, list[int]] = {}
            for idx, data in enumerate(table):
                if data is not None and idx != eos_token_id:
                    grouped.setdefault(data, []).append(idx)
            per_tok[eos_token_id] = TokenTable(table, Vocabulary(eos_token_id, grouped), eos_token_id)
        return per_tok[eos_token_id]


def ranking_regex(k: int) -> str:
    """The schema (reasons length open) as a regex, with no whitespace between JSON tokens and an optional
    leading space (sentencepiece models often start a reply with a "▁{" token)."""
    schema = json.dumps(ranking_schema(k, None))
    return "[ ]?" + build_regex_from_schema(schema, whitespace_pattern="")


def ranking_index(tokenizer, table: TokenTable, k: int) -> tuple[Index, float]:
    """The cached outlines_core `Index` for (tokenizer, eos, k), and the ms spent building it (0 if cached)."""
    key = (table.eos_token_id, k)
    with _LOCK:
        cached = _INDEXES.setdefault(tokenizer, {}).get(key)
    if cached is not None:
        return cached, 0.0
    t0 = time.perf_counter()
    index = Index(ranking_regex(k), table.vocabulary)
    build_ms = (time.perf_counter() - t0) * 1e3
    with _LOCK:
        _INDEXES[tokenizer][key] = index
    return index, build_ms


def token_budget(k: int, max_reasons_chars: int) -> int:
    """max_new_tokens that always lets the JSON close: one token per character at worst, plus the end token."""
    return 1 + max_output_chars(k, max_reasons_chars) + 1


def reasons_bound_for(k: int, max_new_tokens: int, cap: int) -> int:
    """The largest reasons bound (<= cap) whose worst case still fits `max_new_tokens`."""
    room = max_new_tokens - token_budget(k, 0)
    if room < 0:
        raise RerankError(
            f"max_new_tokens={max_new_tokens} cannot fit a ranking of {k} candidates; "
            f"need at least {token_budget(k, 0)}"
        )
    return min(cap, room)


@dataclass
class RankingConstraint(LogitsProcessor):
    """Masks logits to the ranking schema for one generate call (batch size 1); records when decoding starts.

    `first_call_at` is the perf_counter time of the first call, i.e. right after the prefill forward pass.
    """

    index: Index
    table: TokenTable
    k: int
    max_reasons_chars: int
    index_build_ms: float = 0.0
    first_call_at: float | None = None
    steps: int = 0
    _guide: Guide | None = field(default=None, repr=False)
    _bitmask: torch.Tensor | None = field(default=None, repr=False)
    _generated: bytearray = field(default_factory=bytearray, repr=False)
    _pieces: ArrayPieces | None = field(default=None, repr=False)
    _bits: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def build(cls, tokenizer, k: int, *, eos_token_id: int, max_reasons_chars: int) -> RankingConstraint:
        table = token_table(tokenizer, eos_token_id)
        index, build_ms = ranking_index(tokenizer, table, k)
        return cls(
            index=index, table=table, k=k, max_reasons_chars=max_reasons_chars, index_build_ms=build_ms
        )

    def _emitted(self, token_id: int) -> bytes:
        if 0 <= token_id < len(self.table.token_bytes):
            return self.table.token_bytes[token_id] or b""
        return b""

    def text(self) -> str:
        """What the constrained tokens spelled so far."""
        return self._generated.decode("utf-8", errors="replace")

    def spell(self, token_ids: list[int]) -> str:
        """The text of generated token ids as this constraint reads them (special tokens spell nothing)."""
        return b"".join(self._emitted(i) for i in token_ids).decode("utf-8", errors="replace")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != 1:
            raise RerankError(f"RankingConstraint handles batch size 1, got {input_ids.shape[0]}")
        vocab_size = scores.shape[-1]
        if self._guide is None:
            self.first_call_at = time.perf_counter()
            self._guide = Guide(self.index)
            self._bitmask = torch.zeros((1, (vocab_size + 31) // 32), dtype=torch.int32)
        else:
            last = int(input_ids[0, -1])
            if not self._guide.is_finished():
                self._guide.advance(token_id=last, return_tokens=False)
            self._generated += self._emitted(last)
        self.steps += 1
        self._guide.write_mask_into(
            self._bitmask.data_ptr(), self._bitmask.numel(), self._bitmask.element_size()
        )
        # The host writes 4 bytes per 32 tokens; everything after that happens on the logits' device.
        if self._bits is None or self._bits.device != scores.device:
            self._bits = torch.arange(32, dtype=torch.int32, device=scores.device)
        words = self._bitmask.to(scores.device, non_blocking=True)
        # (1, words) int32 -> (1, words, 32) bits -> (vocab,) bool
        allowed = ((words.unsqueeze(-1) >> self._bits) & 1).view(-1)[:vocab_size].bool()
        allowed = self._within_reasons_bound(self._only_unused_ids(allowed))
        return scores.masked_fill(~allowed, float("-inf"))

    def _within_reasons_bound(self, allowed: torch.Tensor) -> torch.Tensor:
        """From the ranking's "]" on, allow only tokens whose reasons characters still fit the bound."""
        text = self.text()
        start = text.find("[")
        close = text.find("]", start) if start >= 0 else -1
        if close < 0:
            return allowed
        after = text[close + 1 :]
        if len(after) < len(_REASONS_OPEN):
            opened, room = after, self.max_reasons_chars
        else:
            written = after[len(_REASONS_OPEN) :]
            if '"' in written:  # the string is closed; only the final "}" and the end token remain
                return allowed
            opened, room = _REASONS_OPEN, self.max_reasons_chars - len(written)
        added = self.table.reasons_added(opened).to(allowed.device)  # cached per table; 4 bytes a token
        fits = torch.zeros_like(allowed)
        n = min(len(fits), len(added))
        fits[:n] = added[:n] <= room
        fits[self.table.eos_token_id] = True
        return allowed & fits

    def _only_unused_ids(self, allowed: torch.Tensor) -> torch.Tensor:
        """Inside the ranking array, forbid tokens that would repeat an id already ranked: per distinct digit run
        (a few dozen), whether partial + run can still grow into an unused id or completes one, looked up for all
        tokens at once on `allowed`'s device."""
        text = self.text()
        start = text.find("[")
        if start < 0 or "]" in text[start:]:
            return allowed
        items = text[start + 1 :].split(",")
        used, partial = set(items[:-1]), items[-1].strip()
        remaining = [str(i) for i in candidate_ids(self.k) if str(i) not in used]
        pieces = self._pieces_on(allowed.device, len(allowed))
        grows = [any(r.startswith(partial + d) for r in remaining) for d in pieces.strings]
        completes = [partial + d in remaining for d in pieces.strings]
        table = torch.tensor([grows, completes, completes], device=allowed.device)  # rows: none, ",", "]"
        sep = pieces.sep.clamp(max=_SEP_CLOSE)
        keep = allowed & table[sep, pieces.digits]
        for token_id in pieces.complex_ids:  # fixed per tokenizer, usually empty
            keep[token_id] = bool(allowed[token_id]) and _extends_unused(
                self._emitted(token_id).decode("latin-1"), partial, remaining
            )
        # The schema always leaves a way to finish with unused ids; never mask everything if a vocab lacks it.
        return torch.where(keep.any(), keep, allowed)

    def _pieces_on(self, device: torch.device, vocab_size: int) -> ArrayPieces:
        """The table's pieces on `device`, cut or padded to the logits' width (padding ids spell nothing)."""
        cached = self._pieces
        if cached is None or cached.digits.device != device or len(cached.digits) != vocab_size:
            pieces = self.table.array_pieces()
            pad = max(0, vocab_size - len(pieces.digits))
            digits = F.pad(pieces.digits[:vocab_size], (0, pad)).to(device)
            sep = F.pad(pieces.sep[:vocab_size], (0, pad)).to(device)
            complex_ids = [i for i in pieces.complex_ids if i < vocab_size]
            self._pieces = cached = ArrayPieces(pieces.strings, digits, sep, complex_ids)
        return cached


def _extends_unused(piece: str, partial: str, remaining: list[str]) -> bool:
    """Whether appending `piece` to the id being written keeps every completed id unused and distinct."""
    remaining = list(remaining)
    for ch in piece:
        if ch.isdigit():
            partial += ch
            if not any(r.startswith(partial) for r in remaining):
                return False
        elif ch in ",]":
            if partial not in remaining:
                return False
            remaining.remove(partial)
            partial = ""
            if ch == "]":
                return True
    return True


__all__ = [
    "RankingConstraint",
    "TokenTable",
    "ranking_index",
    "ranking_regex",
    "reasons_bound_for",
    "token_budget",
    "token_table",
]
