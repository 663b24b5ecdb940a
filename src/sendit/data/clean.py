"""SEND-IT tweet denoising: remove what carries no sentiment a model can generalise from.

Steps, in order, each switched by `CleanConfig`:
1. html: unescape entities (`&amp;` -> `&`, `&quot;`, `&lt;`, `&#39;`), so later steps see real characters.
2. Tokens, removed whole in one left-to-right pass (so an `@` or `#` inside a URL goes with the URL):
   - urls: `http://...`, `https://...`, `www....` in any case, and the `URL` placeholder;
   - mentions: `@name` (not the `@` of an e-mail address), and the `USER` placeholder;
   - hashtags: `#tag`, word included.
   The placeholders are the label/text shards' stand-ins for the mentions and URLs they replaced;
   they match case-sensitively as whole words, so "user", "url" or "URLs" in normal text stay.
3. symbols: delete apostrophes ("can't" -> "cant", "I'm" -> "im": a contraction stays one token, the
   same as the apostrophe-less spelling many tweets already use; as every other symbol becomes a
   space, only apostrophes inside words are affected), then replace every character outside ASCII
   letters, digits and whitespace by a space: punctuation, emoji and the `ï¿½` mojibake. Non-ASCII
   letters go too: in Sentiment140 they are almost all mojibake of UTF-8 read as latin-1
   ("BÃ¤Ã¤h", "sheâ\\x80\\x99s"), not words of another alphabet.
4. lowercase.
Whitespace is always collapsed to single spaces and stripped.

`clean_like_training` is the one place that applies this the way training did (only to sources that
denoise); `prepare`, the evaluation sets and prediction all go through it.
"""
from __future__ import annotations

import functools
import html
import re

import pandas as pd

from sendit.config import CleanConfig, DataConfig
from sendit.data.sources import SOURCES

# (switch, characters the token starts with, the rest of the token after that character)
TOKEN_KINDS = [
    ("urls", "hHwW", r"(?i:(?<=h)ttps?://|(?<=w)ww\.)\S+"),
    ("urls", "U", r"(?<=U)RL\b"),
    ("mentions", "@", r"(?<=@)\w+"),
    ("mentions", "U", r"(?<=U)SER\b"),
    ("hashtags", "#", r"(?<=#)\w+"),
]
APOSTROPHES = ("'", "\u2019")
SYMBOLS_AND_SPACES = re.compile(r"[^A-Za-z0-9]+")  # one pass does the symbols and the whitespace
SPACES = re.compile(r"\s\s+|[^\S ]")  # runs, and single tabs/newlines


@functools.lru_cache(maxsize=None)
def token_pattern(switches: frozenset[str]) -> re.Pattern | None:
    """One regex for the token kinds switched on, so the text is scanned once, not once per kind."""
    kinds = [(first, rest) for switch, first, rest in TOKEN_KINDS if switch in switches]
    if not kinds:
        return None
    first = "".join(sorted({char for chars, _ in kinds for char in chars}))
    # Starting with a character class lets the engine jump between candidates (3-10x faster than a
    # leading `\b`); `(?<!\w.)` then requires that character to start a word.
    return re.compile(rf"[{first}](?<!\w.)(?:{'|'.join(rest for _, rest in kinds)})")


def steps(cfg: CleanConfig) -> list[tuple[str | re.Pattern, str]]:
    """The (pattern, replacement) steps `cfg` switches on, in order; a str pattern is literal."""
    tokens = token_pattern(frozenset(name for name in ("urls", "mentions", "hashtags") if getattr(cfg, name)))
    chosen = [(tokens, " ")] if tokens else []
    if cfg.symbols:
        return chosen + [(apostrophe, "") for apostrophe in APOSTROPHES] + [(SYMBOLS_AND_SPACES, " ")]
    return chosen + [(SPACES, " ")]


def clean_text(text: str, cfg: CleanConfig) -> str:
    """Denoise one text (e.g. at inference time); `clean_series` is the fast path for datasets."""
    if cfg.html:
        text = html.unescape(text)
    for pattern, replacement in steps(cfg):
        text = text.replace(pattern, replacement) if isinstance(pattern, str) else pattern.sub(replacement, text)
    if cfg.lowercase:
        text = text.lower()
    return text.strip()


def clean_series(texts: pd.Series, cfg: CleanConfig) -> pd.Series:
    """Denoise a column with vectorised string ops: the same result as `clean_text` on each element."""
    texts = texts.astype(str)
    if cfg.html:
        escaped = texts.str.contains("&", regex=False)
        texts = texts.mask(escaped, texts[escaped].map(html.unescape))
    for pattern, replacement in steps(cfg):
        texts = texts.str.replace(pattern, replacement, regex=not isinstance(pattern, str))
    if cfg.lowercase:
        texts = texts.str.lower()
    return texts.str.strip()


def clean_like_training(texts: pd.Series, data: DataConfig) -> pd.Series:
    """Texts as a run trained on `data` read them: denoised only where its source is (tweets; not
    IMDb/SST-2 reviews, nor texts with a marked target, which keep their words as written)."""
    return clean_series(texts, data.clean) if SOURCES[data.dataset].clean else texts


def clean_examples(frame: pd.DataFrame, data: DataConfig, whole: bool = False) -> pd.DataFrame:
    """A split's examples as training keeps them: texts cleaned like training, the empty ones dropped
    (`clean.drop_empty`: cleaning can leave nothing, e.g. of a tweet that was only a link) unless the
    split must stay `whole` (a predefined test split is scored at its published size)."""
    frame = frame.assign(text=clean_like_training(frame["text"], data))
    if data.clean.drop_empty and not whole:
        frame = frame[frame["text"].str.strip() != ""]
    return frame.reset_index(drop=True)
