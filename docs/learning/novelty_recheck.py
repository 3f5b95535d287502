"""Re-measures the novelty of samples that experiments.bench_learning saved before it put them
into the balanced form (issue 19): L2 to the nearest aligned checkpoint of the `cpu` zoo, as
the tables measure it. Run from the repository root:

    python docs/learning/novelty_recheck.py

Writes docs/learning/novelty_recheck.json.
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.getcwd())
from configs.common import get_base_config  # noqa: E402
from weightflow_jax import atomic, sampling, symmetry  # noqa: E402
from weightflow_jax.tables import context  # noqa: E402

FILES = {
    "mnist": ["docs/learning/mnist_geometric_samples_mlp.npz",
              "docs/learning/mnist_geometric_samples_compact_rt.npz",
              "docs/learning/mnist_geometric_nt_60min_samples_neuron_transformer.npz",
              "docs/learning/mnist_geometric_levers_600s_samples_mlp.npz",
              "docs/learning/mnist_normalized_loss_weighting_samples_entry.npz",
              "docs/learning/mnist_normalized_loss_weighting_samples_point.npz",
              "docs/learning/mnist_normalized_loss_weighting_samples_point_spheres.npz"],
}


def main():
    out = {}
    for task, files in FILES.items():
        ctx = context.zoo_context(get_base_config(task, "geometric", "cpu"), progress=False)
        for path in files:
            raw = sampling.load_samples_npz(path)
            row = {}
            for form in ("exact", "balanced"):
                params = [(np.asarray(w), np.asarray(b))
                          for w, b in symmetry.represent(raw, form)]
                nov = context.novelty(ctx, params)
                row[form] = {k: float(nov[k]) for k in ("l2_median", "l2_spacing_median")}
                row[form]["ratio"] = row[form]["l2_median"] / row[form]["l2_spacing_median"]
            out[path] = row
            print(path, json.dumps(row), flush=True)
    atomic.write_text("docs/learning/novelty_recheck.json", json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
