#!/usr/bin/env python3
"""scikit-learn's KMeans on the same points as `geossl bench kmeans`, for a
side-by-side figure. Needs numpy and scikit-learn (not part of geossl's
set-up; use any virtualenv):

    ./geossl bench kmeans --points 1000000 --k 100 --dump-points /tmp/points.npy
    python bench/kmeans_sklearn.py /tmp/points.npy --k 100

Same settings as geossl: k-means++ seeding, one initialisation, Lloyd,
tol 1e-4 (relative to the data variance), max 300 iterations.
"""
import argparse
import os
import statistics
import time

import numpy as np
from sklearn.cluster import KMeans


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("points")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    x = np.load(a.points)
    times, iters = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        km = KMeans(n_clusters=a.k, init="k-means++", n_init=1, algorithm="lloyd", tol=1e-4,
                    max_iter=300, random_state=a.seed).fit(x)
        times.append(time.perf_counter() - t0)
        iters.append(km.n_iter_)
    print(f"SKLEARN kmeans points={len(x)} k={a.k} cpus={os.cpu_count()} repeats={a.repeat} "
          f"median_s={statistics.median(times):.3f} min_s={min(times):.3f} iterations={iters[0]} "
          f"inertia={km.inertia_:.3f}")


if __name__ == "__main__":
    main()
