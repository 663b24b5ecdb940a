"""Length-bucketed batches: every example once per epoch, little padding, still shuffled."""
import numpy as np

from sendit.batching import Encoded, collate, length_bucketed_batches, sorted_batches


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
