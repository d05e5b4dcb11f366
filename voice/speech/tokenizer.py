"""Moonshine's tokens: its vocabulary file, and words written as SentencePiece BPE pieces."""

from __future__ import annotations

import functools


def read_vocabulary(data: bytes) -> list[bytes]:
    """The pieces of moonshine-cpp's ``tokenizer.bin``: each one length-prefixed, in id order."""
    pieces = []
    i = 0
    while i < len(data):
        size = data[i]
        i += 1
        if size >= 0x80:  # a two-byte length
            size, i = (size & 0x7F) | (data[i] << 7), i + 1
        pieces.append(data[i : i + size])
        i += size
    return pieces


class Tokenizer:
    """Words to the model's tokens: SentencePiece BPE, where a piece's id is its merge rank."""

    SPACE = "\u2581".encode()
    FIRST_PIECE = 259  # after <unk>, <s>, </s> and the 256 byte pieces

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.rank: dict[bytes, int] = {}
        for token, piece in enumerate(pieces[self.FIRST_PIECE :], self.FIRST_PIECE):
            self.rank.setdefault(piece, token)

    @functools.cache  # noqa: B019 - one tokenizer per process, a few hundred words
    def word(self, word: str, *, space: bool = True) -> tuple[int, ...]:
        """The tokens of ``word`` as it is written after a space (or right after the text)."""
        parts = [self.SPACE] * space + [char.encode() for char in word]
        while True:
            merges = [
                (self.rank[pair], j)
                for j in range(len(parts) - 1)
                if (pair := parts[j] + parts[j + 1]) in self.rank
            ]
            if not merges:
                break
            _, j = min(merges)
            parts[j : j + 2] = [parts[j] + parts[j + 1]]
        return self._ids(parts)

    def sentence(self, text: str) -> tuple[int, ...]:
        """``text`` as the model writes a sentence: a capital first letter and a full stop."""
        words = text.split()
        if not words:
            return ()
        words[0] = words[0].capitalize()
        tokens = [token for word in words for token in self.word(word)]
        return (*tokens, *self.word(".", space=False))

    def _ids(self, parts: list[bytes]) -> tuple[int, ...]:
        tokens: list[int] = []
        for part in parts:
            if part in self.rank:
                tokens.append(self.rank[part])
            else:  # SentencePiece's byte fallback
                tokens.extend(3 + byte for byte in part)
        return tuple(tokens)
