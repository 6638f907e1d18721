"""The training data: COCO -> prepared split folders (prepare-data), and their one record format.

Readers need only :mod:`humanfix.data.records` (``Record``, ``read_records``); see docs/data.md.
"""
