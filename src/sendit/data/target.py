"""A target (aspect) inside its sentence, kept in the one text column by marking it inline.

The `$T$` readers store "the [TGT] battery [/TGT] lasts": the text then identifies the instance
(sentence, target and where the target stands), so deduplication and splitting in `prepare` need
nothing extra, and two aspects of one sentence stay two examples. At encode time the text is fed
as it is (`data.target_mode: inline`) or split back into the pair (sentence, target).
"""
from __future__ import annotations

import re

from sendit.data.errors import DataError

PLACEHOLDER = "$T$"  # where the target stood in the `$T$` files
OPEN, CLOSE = "[TGT]", "[/TGT]"
SPAN = re.compile(r"\[TGT\]\s*(.*?)\s*\[/TGT\]")


def mark(template: str, target: str) -> str:
    """The sentence with every `$T$` replaced by the marked target."""
    return template.replace(PLACEHOLDER, f"{OPEN} {target} {CLOSE}")


def unmark(text: str, where: str) -> tuple[str, str]:
    """(sentence with the target in place, target): the inverse of `mark`."""
    targets = {found.strip() for found in SPAN.findall(text)}
    if len(targets) != 1 or not all(targets):
        raise DataError(f"{where}: expected one target marked as {OPEN} target {CLOSE} (several marks must "
                        f"name the same target), found {sorted(targets) or 'none'} in {text[:80]!r}")
    return SPAN.sub(lambda found: found[1], text), targets.pop()


def as_pairs(texts: list[str]) -> tuple[list[str], list[str]]:
    """Sentences and targets of marked texts, for the tokenizer's sentence-pair input."""
    pairs = [unmark(text, f"text {i + 1}") for i, text in enumerate(texts)]
    return [sentence for sentence, _ in pairs], [target for _, target in pairs]
