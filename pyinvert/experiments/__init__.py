"""The papers' experiments as library code: :func:`table1` (CVPR 2015 Table 1) and its
text rendering :func:`format_table1` (``pyinvert reproduce table1`` runs them)."""

from pyinvert.experiments.table1 import REPORTED_TABLE1, format_table1, table1

__all__ = ["REPORTED_TABLE1", "table1", "format_table1"]
