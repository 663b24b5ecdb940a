"""Tweet denoising: raw -> expected pairs in the shapes found in Sentiment140, one switch at a time."""
import dataclasses

import pandas as pd
import pytest

from sendit.config import CleanConfig, DataConfig
from sendit.data.clean import clean_examples, clean_like_training, clean_series
from sendit.textclean import clean_text

DEFAULT = CleanConfig()

PAIRS = [
    ("@switchfoot http://twitpic.com/2y1zl - Awww, that's a bummer.  "
     "You shoulda got David Carr of Third Day to do it. ;D",
     "awww thats a bummer you shoulda got david carr of third day to do it d"),
    ("@Konstantine I said &quot;scar,&quot; sweetie. ", "i said scar sweetie"),
    ("No woooooork tomorrrow&amp;tuesday ", "no woooooork tomorrrow tuesday"),
    ("&lt;3 it&#39;s lovely", "3 its lovely"),
    ("FCK-Brï¿½ndby 4-0! ", "fck br ndby 4 0"),
    ("Photo: suneoke: saddens me that sheâ\x80\x99s taken  *tear* lol http://tumblr.com/xgo1z1owl",
     "photo suneoke saddens me that she s taken tear lol"),
    ("USER i know  just family drama. its lame URL", "i know just family drama its lame"),
    ("Loving the #sunshine today #happy!", "loving the today"),
    ("see www.example.com/page or HTTPS://X.CO/abc now", "see or now"),
    ("mail me at bob@example.com", "mail me at bob example com"),
    ("so happy 😀😀 yay", "so happy yay"),
    ("USERS and URLs and user and url stay", "users and urls and user and url stay"),
    ("it’s ‘quoted’ 'text'", "its quoted text"),
    ("   \t\n  ", ""),
]


@pytest.mark.parametrize("raw, expected", PAIRS)
def test_clean_text(raw, expected):
    assert clean_text(raw, DEFAULT) == expected


def test_clean_series_matches_clean_text():
    raw = pd.Series([raw for raw, _ in PAIRS])
    assert clean_series(raw, DEFAULT).tolist() == [expected for _, expected in PAIRS]


ALL_OFF = CleanConfig(html=False, mentions=False, urls=False, hashtags=False, symbols=False, lowercase=False)

# switch, raw, cleaned with only this switch on, cleaned with every switch but this one on
SWITCHES = [
    ("html", "fish &amp; chips", "fish & chips", "fish amp chips"),
    ("mentions", "@Bob hi USER", "hi", "bob hi user"),
    ("urls", "see http://x.co/a URL", "see", "see http x co a url"),
    ("hashtags", "go #Team", "go", "go team"),
    ("symbols", "wow!!! can't 😀", "wow cant", "wow!!! can't 😀"),
    ("lowercase", "LOUD Noise", "loud noise", "LOUD Noise"),
]


@pytest.mark.parametrize("switch, raw, alone, all_but", SWITCHES)
def test_each_switch(switch, raw, alone, all_but):
    assert clean_text(raw, dataclasses.replace(ALL_OFF, **{switch: True})) == alone
    assert clean_text(raw, dataclasses.replace(DEFAULT, **{switch: False})) == all_but


def test_all_off_only_collapses_whitespace():
    assert clean_text("  @Bob  #x\thttp://a.b &amp; ", ALL_OFF) == "@Bob #x http://a.b &amp;"


def test_cleaned_like_training_only_where_the_source_denoises():
    """Tweets are denoised; reviews and marked-target texts keep their words as the reader gave them."""
    raw = pd.Series(["@bob LOVED it http://x.co", "A [TGT] great [/TGT] film!"])
    assert clean_like_training(raw, DataConfig(dataset="sentiment140")).tolist() == ["loved it", "a tgt great tgt film"]
    for dataset in ("imdb", "dong2014"):
        assert clean_like_training(raw, DataConfig(dataset=dataset)).tolist() == raw.tolist()


@pytest.mark.parametrize("drop_empty, texts", [(True, ["ok then"]), (False, ["", "ok then"])])
def test_examples_left_empty_by_cleaning_are_dropped_when_asked(drop_empty, texts):
    frame = pd.DataFrame({"text": ["http://only.a.link", "OK then"], "label": [0, 1]})
    cfg = DataConfig(dataset="csv", clean=CleanConfig(drop_empty=drop_empty))
    assert clean_examples(frame, cfg).to_dict("list") == {"text": texts, "label": [1] if drop_empty else [0, 1]}
