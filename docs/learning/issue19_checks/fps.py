"""Ensemble of 64 of N sampled networks: random subsets vs farthest-point sampling in aligned
weight space. Usage: python docs/learning/issue19_checks/fps.py <samples.npz> ..."""
import sys, numpy as np, jax
from weightflow_jax import sampling, symmetry
from weightflow_jax.evaluation import metrics
from weightflow_jax.data import core
from weightflow_jax.tables import context as C
cfg = C.row_config("mnist", "geometric", "aligned_ot", "cpu", {})
z = C.zoo_context(cfg, seed=0, progress=False, cache_dir="runs/tables/mnist_cpu")
x, y = core.load("mnist", "test")
def take(p, i): return [(np.asarray(w)[i], np.asarray(b)[i]) for w, b in p]
def ens(p):
    c = metrics.ensemble_curve(p, x, y, max_size=len(p[0][0])); return c['accuracy'][-1]
def flat(p): return np.concatenate([np.concatenate([np.asarray(w).reshape(len(w), -1), np.asarray(b)], 1) for w, b in p], 1)
def fps(X, k, start=0):
    sel = [start]; d = np.linalg.norm(X - X[start], axis=1)
    for _ in range(k - 1):
        i = int(np.argmax(d)); sel.append(i); d = np.minimum(d, np.linalg.norm(X - X[i], axis=1))
    return np.array(sel)
for f in sys.argv[1:]:
    p = sampling.load_samples_npz(f); p = p[0] if isinstance(p, tuple) else p
    n = len(p[0][0])
    al = symmetry.align(p, z.reference, max_iter=100)
    X = flat(al)
    acc, loss = metrics.accuracy_and_loss(p, x, y)
    rng = np.random.default_rng(0)
    rs = [ens(take(p, rng.choice(n, 64, replace=False))) for _ in range(8)]
    sel = fps(X, 64)
    print(f"{f}: all {n} acc {np.mean(acc):.4f} ens{n} {ens(p):.4f}; random64 ens {np.mean(rs):.4f} ({min(rs):.4f}-{max(rs):.4f}); "
          f"fps64 ens {ens(take(p, sel)):.4f} acc {np.mean(np.asarray(acc)[sel]):.4f} loss {np.mean(np.asarray(loss)[sel]):.3f}")
