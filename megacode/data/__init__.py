"""Data path: indexed datasets, sample/blend indices, packed and blended training datasets."""
