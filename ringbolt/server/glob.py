"""Redis glob patterns (SCAN MATCH, CONFIG GET): a pure, bounded matcher."""

from __future__ import annotations

import functools
from collections.abc import Callable

_ANY_BYTE = frozenset(range(256))
GlobToken = frozenset[int] | None  # None is '*'

def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """Redis `stringmatchlen` semantics: * ? [abc] [^a-z] and backslash
    escapes. Matching is O(len(pattern) * len(key)), never exponential."""
    tokens: list[GlobToken] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == 0x2A:  # '*'
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
        elif char == 0x3F:  # '?'
            tokens.append(_ANY_BYTE)
        elif char == 0x5B:  # '['
            index = _glob_class(pattern, index + 1, tokens)
        elif char == 0x5C and index + 1 < len(pattern):  # backslash
            index += 1
            tokens.append(frozenset((pattern[index],)))
        else:
            tokens.append(frozenset((char,)))
        index += 1
    return functools.partial(_glob_match, tokens)


def _glob_class(pattern: bytes, index: int, tokens: list[GlobToken]) -> int:
    negate = index < len(pattern) and pattern[index] == 0x5E  # '^'
    index += negate
    members: set[int] = set()
    while index < len(pattern) and pattern[index] != 0x5D:  # ']'
        if pattern[index] == 0x5C and index + 1 < len(pattern):
            index += 1
            members.add(pattern[index])
        elif index + 2 < len(pattern) and pattern[index + 1] == 0x2D and pattern[index + 2] != 0x5D:
            low, high = sorted((pattern[index], pattern[index + 2]))
            members.update(range(low, high + 1))
            index += 2
        else:
            members.add(pattern[index])
        index += 1
    tokens.append(_ANY_BYTE - members if negate else frozenset(members))
    return index  # at ']' (or past the end when unterminated, like Redis)


def _glob_match(tokens: list[GlobToken], key: bytes) -> bool:
    token_index = key_index = 0
    star_token, star_key = -1, 0
    while key_index < len(key):
        if token_index < len(tokens):
            token = tokens[token_index]
            if token is None:
                star_token, star_key = token_index, key_index
                token_index += 1
                continue
            if key[key_index] in token:
                token_index += 1
                key_index += 1
                continue
        if star_token < 0:
            return False
        star_key += 1
        key_index = star_key
        token_index = star_token + 1
    return all(token is None for token in tokens[token_index:])
