"""Test and training-split accuracy / loss of sampled networks.
Usage: python docs/learning/issue19_checks/bceval.py <task> <npz> ..."""
import sys, numpy as np
from weightflow_jax import sampling
from weightflow_jax.evaluation import metrics
from weightflow_jax.data import core
task = sys.argv[1]
xt, yt = core.load(task, "test"); xr, yr = core.load(task, "train")
for f in sys.argv[2:]:
    p = sampling.load_samples_npz(f); p = p[0] if isinstance(p, tuple) else p
    a, l = metrics.accuracy_and_loss(p, xt, yt); ar, lr = metrics.accuracy_and_loss(p, xr, yr)
    print(f"{f.split('/')[-1]:32s} n {len(a)} test {np.mean(a):.4f}/{np.mean(l):.4f} train {np.mean(ar):.4f}/{np.mean(lr):.4f}")
