"""The access-log parsers' speed-ups give exactly what the plain code gives (pure unit tests, no services).

Each fast path is compared with the straightforward code it replaces, on edge cases and on random input:
the field split's regular expression with the one it replaced.
"""

from __future__ import annotations

import random
import re

from edgeledger.deliveries.parsers.accesslog import _tokens

# The field split as first written: the quoted string as an alternation per character.
_PLAIN_TOKEN_RE = re.compile(r'\[[^\]]*\]|"(?:[^"\\]|\\.)*"|\S+')


def test_split_matches_the_plain_expression_on_edge_cases() -> None:
    lines = [
        '1.2.3.4 - - [01/May/2024:02:00:00 +0200] "GET /a HTTP/1.1" 200 5 "-" "UA x"',
        '"unterminated quote and [bracket',
        '"escaped \\" quote" next',
        '"ends in a backslash\\',
        '"escape then newline\\\n" x',
        'a"b c"d [e "f] g" h',
        '[x]"y"z',
        '""""',
        '"a\\\\" "b\\\\\\"c"',
        '\u3000"wide space"\u3000[t]\x0bv',
        "",
    ]
    for line in lines:
        assert _tokens(line) == _PLAIN_TOKEN_RE.findall(line), line


def test_split_matches_the_plain_expression_on_random_lines() -> None:
    rng = random.Random(20240501)
    alphabet = ['"', "[", "]", "\\", " ", "\t", "\n", "\u3000", "a", "b", "é"]
    for _ in range(100_000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
        assert _tokens(line) == _PLAIN_TOKEN_RE.findall(line), repr(line)
