"""The pieces of ``humanfix generate``: prompts and seeds (:mod:`.jobs`), pipelines and conditioning
(:mod:`.pipelines`), PNG files with metadata (:mod:`.pngmeta`) and labelled comparison grids (:mod:`.grid`).
:mod:`humanfix.generate` holds the config and puts them together."""
