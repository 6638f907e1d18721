"""``humanfix evaluate``: FID/KID with honest error bars, face and pose metrics, CLIP score, a report, A/B ratings.

- sets.py     which images: generate outputs (index.jsonl) and plain folders, grouped by model
- fid.py      clean-fid's Inception features, the Fréchet distance, bootstrap interval, KID, saved statistics
- faces.py    MTCNN detection rate and confidence, face crops, CLIP score
- persons.py  persons (RT-DETR) and their 17 keypoints (ViTPose), or a prepared split's annotated ones
- pose.py     the anatomical plausibility of a skeleton, and the pose figures of a set with intervals
- report.py   the self-contained HTML page (templates/report.html.j2) with skeletons and the blind A/B mode
- ratings.py  win rates, Wilson intervals and binomial tests from downloaded A/B choices
- run.py      EvaluateConfig and ``evaluate(config)``, the one function the CLI calls
"""
