"""ByzFL 0.0.11's own answers on the fixed inputs of
tests/test_aggregators_catalogue.py (ARC, MoNNA, SMEA, CAF), for comparison
with byzjax's (run it in a venv with ``pip install byzfl==0.0.11 torch``;
the tests themselves never import ByzFL).

SMEA and CAF use one power-iteration step from a random vector in ByzFL, so
their answers depend on the seed: each is printed for a few NumPy seeds, and
for CAF the number of loop steps (one random draw per step).

    python scripts/byzfl_fixed_inputs.py
"""

import byzfl
import numpy as np

X3 = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
SQUARE = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [1.0, 1.0],
                   [9.0, -3.0], [-3.0, 9.0]])
ARC7 = np.array([[3, 4], [0, 1], [6, 8], [0, -2], [-5, 12], [0, 0], [0, 0]], float)
MONNA7 = np.array([[0, 0], [1, 0], [0, 2], [1.5, 1], [10, 10], [3, 3], [-4, -4]],
                  float)
SMEA7 = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [4, 4], [-1, 5], [0.5, 0.5]], float)
CAF7 = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [1.5, 1], [100, 0], [100, 2]], float)


def main():
    # ByzFL's ARC clips its input in place: every call gets a copy.
    print("ARC X3 f=1:", byzfl.ARC(f=1)(X3.copy()).tolist())
    print("ARC SQUARE f=2, rows 5-6:", byzfl.ARC(f=2)(SQUARE.copy())[5:].tolist())
    print("ARC ARC7 f=2, rows 2, 4:", byzfl.ARC(f=2)(ARC7.copy())[[2, 4]].tolist())
    print("MoNNA X3 f=1 idx=1:", byzfl.MoNNA(f=1, idx=1)(X3.copy()).tolist())
    print("MoNNA MONNA7 f=2 idx=3:", byzfl.MoNNA(f=2, idx=3)(MONNA7.copy()).tolist())
    randn = np.random.randn
    steps = [0]

    def counting_randn(*args, **kwargs):
        steps[0] += 1
        return randn(*args, **kwargs)

    np.random.randn = counting_randn
    for seed in range(3):
        np.random.seed(seed)
        print(f"seed {seed}: SMEA X3 f=1:", byzfl.SMEA(f=1)(X3.copy()).tolist(),
              "SMEA SMEA7 f=2:", byzfl.SMEA(f=2)(SMEA7.copy()).tolist(),
              "CAF X3 f=1:", byzfl.CAF(f=1)(X3.copy()).tolist(),
              "CAF SQUARE f=2:", byzfl.CAF(f=2)(SQUARE.copy()).tolist())
        steps[0] = 0
        out = byzfl.CAF(f=2)(CAF7.copy())
        print(f"seed {seed}: CAF CAF7 f=2: {out.tolist()} in {steps[0]} steps")


if __name__ == "__main__":
    main()
