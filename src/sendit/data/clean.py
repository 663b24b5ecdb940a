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

import html

import pandas as pd

from sendit.config import CleanConfig, DataConfig
from sendit.data.sources import SOURCES
from sendit.textclean import steps


def clean_series(texts: pd.Series, cfg: CleanConfig) -> pd.Series:
    """Denoise a column with vectorised string ops: the same result as `textclean.clean_text` on each element."""
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
