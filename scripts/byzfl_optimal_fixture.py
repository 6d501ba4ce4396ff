"""ByzFL 0.0.11's own Optimal attacks on fixed inputs, written as a test fixture.

Computes ``Optimal_ALittleIsEnough`` and ``Optimal_InnerProductManipulation``
(their line search over ``tau``: ``evals=20, start=0.0, delta=10.0,
ratio=0.8``) on a few fixed honest stacks, against TrMean, GeometricMedian and
Average, with and without the pre-aggregators Clipping (c = 2) then NNM, for
f = 1 and 2 (and once with a declared f larger than the real one), on
float32 torch tensors as ByzFL's benchmark passes them. Writes the inputs,
ByzFL's chosen ``tau`` and its Byzantine vector to
``tests/data/byzfl_optimal_attacks.json``, which
``tests/test_adaptive_line_search.py`` compares byzjax's
``adaptive(..., search="line")`` with. Run it in a venv with
``pip install byzfl==0.0.11 torch`` (the tests themselves never import ByzFL):

    python scripts/byzfl_optimal_fixture.py
"""

import json
import os

import byzfl
import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                   "byzfl_optimal_attacks.json")


def inputs():
    rng = np.random.default_rng(7)
    random = (rng.normal(size=(6, 4)) + 0.5).astype(np.float32)
    # Duplicated rows, and a coordinate equal in every row (sigma = 0 there):
    # ties in the sorts of TrMean and NNM, and flat stretches of the damage.
    # Only identical rows tie: two different rows at the same distance would
    # leave NNM's choice to ByzFL's argpartition (arbitrary; byzjax takes the
    # lowest index), which no implementation can match.
    a, b, c, d = (rng.normal(size=(4, 4)) + 0.5).astype(np.float32)
    tied = np.stack([a, a, b, c, b, d])
    tied[:, 3] = 1.0
    return {"random": random, "tied": tied}


def cases():
    """(name, aggregator, pre-aggregators, real f, declared f)."""
    out = []
    for f in (1, 2):
        out += [("trmean", "TrMean", False, f, f), ("trmean", "TrMean", True, f, f),
                ("gm", "GeometricMedian", False, f, f),
                ("gm", "GeometricMedian", True, f, f),
                ("average", "Average", False, f, f),
                ("average", "Average", True, f, f)]
    out.append(("trmean", "TrMean", True, 1, 2))
    return out


def build(agg_name, pre, declared):
    agg = {"TrMean": lambda: byzfl.TrMean(f=declared),
           "GeometricMedian": lambda: byzfl.GeometricMedian(nu=0.1, T=3),
           "Average": lambda: byzfl.Average()}[agg_name]()
    pres = [byzfl.Clipping(c=2.0), byzfl.NNM(f=declared)] if pre else []
    return agg, pres


def run(attack_cls, x, agg, pres, f):
    """ByzFL's chosen tau, its vector and every (tau, damage) it evaluated."""
    attack = attack_cls(agg=agg, pre_agg_list=pres, f=f)
    trace = []
    evaluate = attack._evaluate

    def recording(honest, avg, tau):
        y = evaluate(honest, avg, tau)
        trace.append((float(tau), float(y)))
        return y

    attack._evaluate = recording
    # The steps of ByzFL's __call__, keeping the chosen tau.
    avg = torch.mean(x, dim=0)
    tau, best, delta, left = attack._expansion_phase(x, avg)
    tau = attack._contraction_phase(x, avg, tau, best, delta, left)
    vector = attack(x)
    assert len(trace) == 2 * attack.evals
    return tau, vector, trace[:attack.evals]


def main():
    records = []
    data = inputs()
    for input_name, arr in data.items():
        x = torch.from_numpy(arr.copy())
        for _, agg_name, pre, f, declared in cases():
            for attack_name, cls in (("alie", byzfl.Optimal_ALittleIsEnough),
                                     ("ipm", byzfl.Optimal_InnerProductManipulation)):
                agg, pres = build(agg_name, pre, declared)
                tau, vector, trace = run(cls, x.clone(), agg, pres, f)
                records.append({
                    "input": input_name, "attack": attack_name,
                    "aggregator": agg_name, "pre_aggregators": pre,
                    "f": f, "declared_f": declared, "tau": float(tau),
                    "vector": [float(v) for v in vector.numpy()],
                    "trace": trace})
    payload = {
        "source": "byzfl 0.0.11 (torch float32 inputs); scripts/"
                  "byzfl_optimal_fixture.py",
        "line_search": {"evals": 20, "start": 0.0, "delta": 10.0, "ratio": 0.8},
        "geometric_median": {"nu": 0.1, "T": 3}, "clipping": {"c": 2.0},
        "inputs": {k: v.tolist() for k, v in data.items()},
        "cases": records}
    with open(OUT, "w") as fh:  # one case per line
        cases_ = payload.pop("cases")
        text = json.dumps(payload, indent=1)[:-2]
        fh.write(text + ',\n "cases": [\n')
        fh.write(",\n".join(json.dumps(c) for c in cases_) + "\n]}\n")
    print(f"wrote {len(records)} cases to {os.path.normpath(OUT)}")
    for r in records:
        print(r["input"], r["attack"], r["aggregator"], r["pre_aggregators"],
              r["f"], r["declared_f"], r["tau"])


if __name__ == "__main__":
    main()
