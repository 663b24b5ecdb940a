"""Length-bucketed batches: every example once per epoch, little padding, still shuffled."""
import numpy as np

import pytest

from sendit.batching import Encoded, collate, length_bucketed_batches, random_batches, sorted_batches


def test_buckets_cover_every_example_once_and_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 5000)
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1), window=16)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(5000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(rng.permutation(5000), len(batches)))
    assert padded < 0.75 * random_padded
    again = length_bucketed_batches(lengths, 32, np.random.default_rng(2), window=16)
    assert [b.tolist() for b in again] != [b.tolist() for b in batches]  # a new epoch, a new order


@pytest.mark.parametrize("n", [1, 31, 32, 33, 64, 100])
def test_random_batches_cover_every_example_once_in_full_batches_but_the_last(n):
    """The unbucketed order (head features, bucketing off): nothing dropped, a short batch only at the end."""
    batches = random_batches(n, 32, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    assert [len(b) for b in batches[:-1]] == [32] * (len(batches) - 1) and 1 <= len(batches[-1]) <= 32


def test_sorted_batches_are_in_length_order():
    lengths = np.array([5, 1, 4, 2, 3])
    assert np.concatenate(sorted_batches(lengths, 2)).tolist() == [1, 3, 4, 2, 0]


def test_collate_pads_right_or_left_with_mask():
    encoded = Encoded([np.array([7, 8, 9]), np.array([5])], np.array([1, 0]))
    right = collate(encoded, [0, 1], pad_id=0)
    assert right["input_ids"].tolist() == [[7, 8, 9], [5, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = collate(encoded, [0, 1], pad_id=0, left_pad=True)
    assert left["input_ids"].tolist() == [[7, 8, 9], [0, 0, 5]]
    assert left["labels"].tolist() == [1, 0]


def test_token_budget_batches_respect_the_budget_and_cover_every_example():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 5000)
    lengths[7] = 2000  # longer than the budget: travels alone
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1), window=16, max_tokens=1024)
    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    assert all(len(b) * lengths[b].max() <= 1024 for b in batches if 7 not in b)
    assert [b.tolist() for b in batches if 7 in b] == [[7]]
    # Short texts ride in larger batches than long ones; batches are full up to the next example.
    assert max(map(len, batches)) > 32 > min(map(len, batches))
    assert sum(len(b) * lengths[b].max() for b in batches) > 0.85 * 1024 * (len(batches) - 16)


def test_token_budget_needs_length_buckets():
    import pytest

    from sendit.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="train.batch_tokens"):
        TrainConfig(batch_tokens=512, length_buckets=False)
    with pytest.raises(ConfigError, match="train.batch_tokens"):
        TrainConfig(batch_tokens=0)
