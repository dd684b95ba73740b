"""UCUM syntax (the grammar of the UCUM specification, section 2.1), without the table of units.

Checks that a unit code is well formed: terms joined by `.` and `/`, components with an optional prefix and
exponent, factors, parentheses and `{annotations}`. Whether each atom is a defined unit is not checked.

>>> [is_ucum(u) for u in ("mg/dL", "10*9/L", "mL/min/{1.73_m2}", "{score}", "1", "kg.m-2", "%")]
[True, True, True, True, True, True, True]
>>> [is_ucum(u) for u in ("mg/", "mg//L", "mL min", "{a{b}}", "", "kg..m", "(mg")]
[False, False, False, False, False, False, False]
"""

from __future__ import annotations

import re
from functools import lru_cache

# Printable ASCII except the characters the grammar reserves; square brackets hold a whole atom part.
_ATOM = r"(?:[!#-'*,0-9:-<>-Z\\^-z|~]|\[[!-Z\\^-z|~]*\])+"
_ANNOTATION = r"\{[!-z|~]*\}"
_SIMPLE = re.compile(rf"(?:(?:{_ATOM})(?:[+-]?\d+)?|\d+)(?:{_ANNOTATION})?|{_ANNOTATION}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def term(self) -> bool:
        if not self.component():
            return False
        while self.pos < len(self.text) and self.text[self.pos] in "./":
            self.pos += 1
            if not self.component():
                return False
        return True

    def component(self) -> bool:
        if self.text.startswith("(", self.pos):
            self.pos += 1
            if not self.term() or not self.text.startswith(")", self.pos):
                return False
            self.pos += 1
            return True
        match = _SIMPLE.match(self.text, self.pos)
        if not match or match.end() == self.pos:
            return False
        self.pos = match.end()
        return True


@lru_cache(maxsize=4096)
def is_ucum(code: str) -> bool:
    """Whether a code follows UCUM syntax (leading `/` allowed, as in `/min`)."""
    if not code or code != code.strip() or " " in code:
        return False
    parser = _Parser(code[1:] if code.startswith("/") else code)
    return parser.term() and parser.pos == len(parser.text)
