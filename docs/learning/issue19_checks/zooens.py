"""Ensemble accuracy of the mnist cpu zoo's snapshots (all, final, random 512) and of
sampled networks (all of each file). Usage: python docs/learning/issue19_checks/zooens.py [npz ...]"""
import sys, numpy as np
from weightflow_jax import sampling
from weightflow_jax.evaluation import metrics
from weightflow_jax.data import core
from weightflow_jax.tables import context as C
cfg = C.row_config("mnist", "geometric", "aligned_ot", "cpu", {})
z = C.zoo_context(cfg, seed=0, progress=False, cache_dir="runs/tables/mnist_cpu")
x, y = core.load("mnist", "test")
def take(p, i): return [(np.asarray(w)[i], np.asarray(b)[i]) for w, b in p]
def meanprob(p):
    n = len(p[0][0]); s = 0
    for a in range(0, n, 256):
        s = s + metrics.probabilities(take(p, np.arange(a, min(a + 256, n))), x).astype(np.float64).sum(0)
    return s / n
ck = z.checkpoints; N = len(ck[0][0])
mp = meanprob(ck); print("zoo all", N, "ensemble", np.mean(mp.argmax(-1) == y))
rid = np.asarray(z.zoo.run_id[z.subset]); st = np.asarray(z.zoo.step[z.subset])
fin = np.array([np.where(rid == r)[0][np.argmax(st[rid == r])] for r in np.unique(rid)])
print("final", len(fin), np.mean(meanprob(take(ck, fin)).argmax(-1) == y))
rng = np.random.default_rng(1)
print("zoo random 512:", [round(float(np.mean(meanprob(take(ck, rng.choice(N, 512, replace=False))).argmax(-1) == y)), 4) for _ in range(3)])
for f in sys.argv[1:]:
    p = sampling.load_samples_npz(f); p = p[0] if isinstance(p, tuple) else p
    print(f, "ens all", np.mean(meanprob(p).argmax(-1) == y))
