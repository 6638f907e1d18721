"""How honest is `humanfix evaluate --bootstrap`? And how much faster is the factor route than clean-fid's sqrtm?

On synthetic 2048-d features (ReLU of a 64-d Gaussian through a fixed random map, plus small noise:
non-negative, correlated, low-rank like Inception pool features), with a fixed real set:

1. FID over many fresh generated sets of size N gives its true spread at that N (and E[FID_N]).
2. From single sets, the bootstrap interval of humanfix.evaluate.fid.bootstrap_fid: its width against the
   true spread, and how often it contains E[FID_N] (coverage; 95% is the target).
3. One FID through clean-fid's frechet_distance (scipy sqrtm of the 2048×2048 product) against
   humanfix's singular-value route on the same features: time and agreement.

    .venv/bin/python benchmarks/evaluate_bootstrap.py [--n 200] [--trials 20] [--resamples 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from humanfix.evaluate.fid import Moments, bootstrap_fid, frechet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="generated images per set")
    ap.add_argument("--n-real", type=int, default=3000, help="real images")
    ap.add_argument("--fresh", type=int, default=40, help="fresh generated sets for the true spread")
    ap.add_argument("--trials", type=int, default=20, help="sets whose bootstrap interval is checked")
    ap.add_argument("--resamples", type=int, default=100, help="bootstrap resamples per set")
    ap.add_argument("--shift", type=float, default=0.05, help="how far the generated distribution is off")
    args = ap.parse_args()

    d = 2048
    rng = np.random.default_rng(0)
    w = np.random.default_rng(1).standard_normal((64, d)) / 8

    def draw(n: int, shift: float) -> np.ndarray:
        z = rng.standard_normal((n, 64))
        return np.maximum(z @ w + shift, 0) + 0.01 * rng.standard_normal((n, d))

    real = draw(args.n_real, 0.0)
    t = time.perf_counter()
    real_m = Moments(real)
    print(f"real set: {args.n_real} × {d}, moments in {time.perf_counter() - t:.1f}s")

    fresh = np.array([frechet(real_m, Moments(draw(args.n, args.shift))) for _ in range(args.fresh)])
    target, spread = fresh.mean(), fresh.std(ddof=1)
    print(f"FID over {args.fresh} fresh sets of N={args.n}: mean {target:.3f}, std {spread:.3f}")

    widths, covered, raw_covered, biases, t_boot = [], 0, 0, [], 0.0
    for _ in range(args.trials):
        gen = draw(args.n, args.shift)
        t = time.perf_counter()
        bs = bootstrap_fid(real_m, gen, args.resamples, seed=int(rng.integers(1 << 31)))
        t_boot += time.perf_counter() - t
        widths.append(bs.high - bs.low)
        biases.append(bs.bias)
        covered += bs.low <= target <= bs.high
        lo_raw, hi_raw = np.percentile(bs.replicates, [2.5, 97.5])
        raw_covered += lo_raw <= target <= hi_raw
    print(
        f"bootstrap ({args.resamples} resamples, {args.trials} sets): mean width {np.mean(widths):.3f} "
        f"(= {np.mean(widths) / (2 * 1.96 * spread):.2f}× the width ±1.96 std of fresh sets would give), "
        f"mean bootstrap bias {np.mean(biases):.3f}"
    )
    print(
        f"coverage of E[FID_N]: shifted interval {covered}/{args.trials}, "
        f"raw percentile interval {raw_covered}/{args.trials}; {t_boot / args.trials:.2f}s per bootstrap"
    )

    from cleanfid.fid import frechet_distance

    gen = draw(args.n, args.shift)
    t = time.perf_counter()
    ours = frechet(real_m, Moments(gen))
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = frechet_distance(real.mean(0), np.cov(real, rowvar=False), gen.mean(0), np.cov(gen, rowvar=False))
    t_ref = time.perf_counter() - t
    print(
        f"one FID: humanfix {ours:.6f} in {t_ours:.2f}s, clean-fid frechet_distance {ref:.6f} in {t_ref:.1f}s "
        f"(relative difference {abs(ours - ref) / abs(ref):.1e})"
    )


if __name__ == "__main__":
    main()
