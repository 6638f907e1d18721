"""``humanfix evaluate``: FID/KID with honest error bars, face metrics, CLIP score, an inspection report, A/B ratings.

- sets.py     which images: generate outputs (index.jsonl) and plain folders, grouped by model
- fid.py      clean-fid's Inception features, the Fréchet distance, bootstrap interval, KID, saved statistics
- faces.py    MTCNN detection rate and confidence, face crops, CLIP score
- report.py   the self-contained HTML page with the blind A/B mode
- ratings.py  win rates, Wilson intervals and binomial tests from downloaded A/B choices
- run.py      EvaluateConfig and ``evaluate(config)``, the one function the CLI calls
"""
