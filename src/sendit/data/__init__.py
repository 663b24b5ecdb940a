"""The data layer: dataset readers, tweet cleaning, stratified splits, and `prepare` tying them together."""
from sendit.data.datasets import dataset_splits, split_of  # importing it registers the benchmark readers
from sendit.data.errors import DataError
from sendit.data.prepare import Splits, parse_split_name, prepare
from sendit.data.sources import SOURCES, data_root, read_source

__all__ = ["DataError", "Splits", "prepare", "read_source", "parse_split_name", "SOURCES", "data_root",
           "dataset_splits", "split_of"]
