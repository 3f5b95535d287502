# Run from the repository root after `python -m experiments.tables --table=conditioning_mnist --size=cpu`:
#   python docs/learning/mnist_prompt_overshoot_probe.py  (writes /tmp/r2/*; results: mnist_prompt_overshoot_probe.json)
"""Does the MNIST conditioned flow's overshoot at high prompts come from integration error?
Same trained flow, same prompts, same seed; Euler 64 / 256 and midpoint 128 (= 256 evals)."""
import json, time
import numpy as np
from weightflow_jax import pipeline, evaluation, data as data_lib

wd = "runs/tables/conditioning_mnist_cpu/geometric_aligned_ot_cond"
run = pipeline.load_flow(wd)
x, y = data_lib.load("mnist", "train")
out = []
for prompt in (0.2135, 0.3001, 0.3559):
    for solver, steps in (("euler", 64), ("euler", 256), ("midpoint", 128)):
        t0 = time.time()
        res = pipeline.sample_and_evaluate(
            run, f"/tmp/r2/p{prompt}_{solver}{steps}", num=32, steps=steps, solver=solver,
            chunk=32, options=pipeline.sampling_options(run.config.sample, condition=str(prompt),
                                                        condition_weight=1.0))
        _, loss = evaluation.accuracy_and_loss(res["params"], x, y)
        per = np.asarray(loss)  # (networks,): each network's mean training-split loss
        row = {"prompt": prompt, "solver": solver, "steps": steps,
               "train_loss_mean": float(np.mean(per)), "train_loss_median": float(np.median(per)),
               "test_acc": res["samples"]["acc_mean"], "s": time.time() - t0}
        print(json.dumps(row), flush=True)
        out.append(row)
json.dump(out, open("docs/learning/mnist_prompt_overshoot_probe.json", "w"), indent=1)
