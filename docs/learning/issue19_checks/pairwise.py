"""Nearest checkpoint up to permutation, before it was in the package: re-align each query to
the reference-aligned nearest checkpoint of every run (48 networks per set, 48 spacing queries).
Usage: python docs/learning/issue19_checks/pairwise.py <task> <table runs subdir> heldout|<npz> ..."""
import sys, time, glob, numpy as np
from weightflow_jax import evaluation, symmetry, sampling, zoo as zoo_lib
from weightflow_jax.tables import context as C
task, wdname = sys.argv[1], sys.argv[2]
cfg = C.row_config(task, "geometric", "aligned_ot", "cpu", {})
z = C.zoo_context(cfg, seed=0, progress=False, cache_dir=f"runs/tables/{wdname}")
flat = lambda q: np.concatenate([np.concatenate([np.asarray(w).reshape(len(w), -1), np.asarray(b)], 1) for w, b in q], 1)
F = flat(z.checkpoints); rid = np.asarray(z.zoo.run_id)[z.subset]; runs = np.unique(rid)
def one(q, i): return [(np.asarray(w)[i], np.asarray(b)[i]) for w, b in q]
def refined(Q, own_run=None):
    Qa = symmetry.align(Q, z.reference); QF = flat(Qa); out = []; outr = []; base = []
    for i in range(len(QF)):
        d = np.linalg.norm(F - QF[i], axis=1)
        if own_run is not None: d = np.where(rid == own_run[i], np.inf, d)
        base.append(d.min()); best = (np.inf, -1)
        for r in runs:
            m = np.where(rid == r, d, np.inf); j = int(np.argmin(m))
            if not np.isfinite(m[j]): continue
            a = symmetry.align(one(Qa, i), one(z.checkpoints, j))
            dd = np.linalg.norm(flat([(w[None], b[None]) for w, b in a])[0] - F[j])
            if dd < best[0]: best = (dd, r)
        out.append(best[0]); outr.append(best[1])
    return np.array(base), np.array(out), np.array(outr)
t = time.time()
qi = np.random.default_rng(0).choice(len(F), 48, replace=False)
sb, sr, _ = refined(one(z.checkpoints, qi), own_run=rid[qi])
print(f"spacing (48 queries): ref-aligned median {np.median(sb):.2f}  pairwise {np.median(sr):.2f}  ({time.time()-t:.0f}s)")
for f in sys.argv[3:]:
    if f == "heldout":
        hz = zoo_lib.load_zoo(glob.glob(str(cfg.zoo.dir) + "_heldout*")[0])
        idx = evaluation.random_checkpoint_per_run(hz.run_id, 0)
        p = [(np.asarray(w)[idx], np.asarray(b)[idx]) for w, b in hz.params]
    else:
        p = sampling.load_samples_npz(f); p = p[0] if isinstance(p, tuple) else p
    p = one(p, np.arange(min(48, len(p[0][0]))))
    b, r, rr = refined(p)
    print(f"{f.split('/')[-1]:30s} ref-aligned median {np.median(b):.2f} ({np.median(b)/np.median(sb):.2f}x)  pairwise {np.median(r):.2f} ({np.median(r)/np.median(sr):.2f}x)  runs {len(np.unique(rr))}")
