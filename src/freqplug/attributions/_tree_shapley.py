"""Tree-ensemble surrogate of a coalition game and its exact Shapley values (the ``tree`` estimator).

A gradient-boosted tree ensemble (XGBoost; the optional extra ``freqplug[shapley]``) is fitted on the
0/1 coalition matrix -> game value. Its Shapley values are computed exactly from its leaves, without
sampling: with a single all-absent background row (absent players are 0), the ensemble is the game
``f(S) = c + sum_leaves w_l [A_l ⊆ S] [R_l ∩ S = ∅]`` where ``A_l`` (``R_l``) are the players the path to
leaf ``l`` requires present (absent). The Shapley value of one such product game is, for ``a = |A|``,
``r = |R|``::

    phi_i = (a - 1)! r! / (a + r)!      for i in A
    phi_i = -a! (r - 1)! / (a + r)!     for i in R

and 0 elsewhere; paths that require a player both ways are unreachable and skipped. Cost
O(leaves x depth). This equals shap's interventional ``TreeExplainer`` with one all-zero background row.

Everything here is float64: the leaf values are read from the booster's JSON (float32 values, exactly
representable in float64) and :meth:`TreeEnsemble.predict` sums them in float64, so the efficiency
``sum(phi) = f(N) - f(∅)`` holds to float64 rounding.
"""

from __future__ import annotations

import json
import math
from typing import List, Tuple

import numpy as np

from .._optional import require

#: XGBoost settings of the surrogate (the issue's measurements: 200 trees of depth 4, learning rate 0.1;
#: bigger or smaller trees were no better). One thread and histogram splits with 2 bins (the features are
#: 0/1): deterministic, bitwise repeatable.
TREE_PARAMS = dict(max_depth=4, eta=0.1, tree_method="hist", max_bin=2, nthread=1, base_score=0.0,
                   objective="reg:squarederror", verbosity=0)
NUM_TREES = 200
#: Standard deviation of the targets XGBoost is fitted on (see :func:`fit_surrogate`).
LABEL_SCALE = 1000.0


class TreeEnsemble:
    """A fitted ensemble ``f(S) = offset + sum of trees``, read out of an XGBoost booster into float64 arrays.

    Attributes:
        num_players: P, the number of 0/1 features.
        offset: the constant added to every prediction.
        trees: per tree ``(left, right, feature, threshold_or_leaf)`` numpy arrays; ``left[n] == -1`` marks a
            leaf whose value is ``threshold_or_leaf[n]``; a split sends a coalition left iff
            ``z[feature] < threshold``.
    """

    def __init__(self, num_players: int, offset: float, trees: List[Tuple[np.ndarray, ...]]):
        self.num_players = num_players
        self.offset = float(offset)
        self.trees = trees

    @classmethod
    def from_booster(cls, booster, num_players: int, offset: float) -> "TreeEnsemble":
        model = json.loads(booster.save_raw("json"))
        trees = []
        for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
            trees.append((np.asarray(tree["left_children"], dtype=np.int64),
                          np.asarray(tree["right_children"], dtype=np.int64),
                          np.asarray(tree["split_indices"], dtype=np.int64),
                          np.asarray(tree["split_conditions"], dtype=np.float64)))
        return cls(num_players, offset, trees)

    def predict(self, coalitions: np.ndarray) -> np.ndarray:
        """f on boolean coalitions (R, P) -> (R,) float64."""
        z = np.asarray(coalitions, dtype=np.float64)
        rows = np.arange(z.shape[0])
        total = np.full(z.shape[0], self.offset, dtype=np.float64)
        for left, right, feature, value in self.trees:
            node = np.zeros(z.shape[0], dtype=np.int64)
            while True:
                inner = left[node] >= 0
                if not inner.any():
                    break
                go_left = z[rows, feature[node]] < value[node]
                node = np.where(inner, np.where(go_left, left[node], right[node]), node)
            total += value[node]
        return total

    def shapley(self) -> np.ndarray:
        """Exact Shapley values (P,) float64 of the game ``S -> f(1_S)`` (module docstring formula)."""
        phi = np.zeros(self.num_players, dtype=np.float64)
        for left, right, feature, value in self.trees:
            # depth-first over (node, players required present, players required absent)
            stack = [(0, (), ())]
            while stack:
                node, present, absent = stack.pop()
                if left[node] < 0:
                    _add_leaf(phi, value[node], present, absent)
                    continue
                j, threshold = int(feature[node]), value[node]
                absent_left, present_left = 0.0 < threshold, 1.0 < threshold
                if absent_left == present_left:  # both values go the same way: no condition on j
                    stack.append((int(left[node] if absent_left else right[node]), present, absent))
                    continue
                # the child a present (absent) j reaches requires j present (absent)
                present_child = int(left[node] if present_left else right[node])
                absent_child = int(left[node] if absent_left else right[node])
                if j not in absent:
                    stack.append((present_child, present if j in present else present + (j,), absent))
                if j not in present:
                    stack.append((absent_child, present, absent if j in absent else absent + (j,)))
        return phi


def _add_leaf(phi: np.ndarray, weight: float, present: tuple, absent: tuple) -> None:
    a, r = len(present), len(absent)
    if a + r == 0:  # a constant: no Shapley value
        return
    if a:
        phi[list(present)] += weight * math.factorial(a - 1) * math.factorial(r) / math.factorial(a + r)
    if r:
        phi[list(absent)] -= weight * math.factorial(a) * math.factorial(r - 1) / math.factorial(a + r)


def fit_surrogate(coalitions: np.ndarray, values: np.ndarray, seed: int) -> TreeEnsemble:
    """Fit the boosted trees on boolean coalitions (R, P) -> values (R,) (float64); deterministic given ``seed``.

    The values are centred on their mean in float64 and scaled to a standard deviation of
    :data:`LABEL_SCALE` before XGBoost sees them (and the leaves scaled back): boosting with squared loss
    is scale-equivariant except for XGBoost's absolute floor on a split's gain (1e-6), which on
    unit-scale games stops the fit at a residual of about 1e-4 of the values' spread.
    """
    xgboost = require("xgboost", "FrequencyShapley(estimator='tree')")
    values = np.asarray(values, dtype=np.float64)
    offset = float(values.mean())
    spread = float(values.std())
    scale = LABEL_SCALE / spread if spread > 0 else 1.0
    data = xgboost.DMatrix(np.asarray(coalitions, dtype=np.float32), label=(values - offset) * scale, nthread=1)
    booster = xgboost.train({**TREE_PARAMS, "seed": int(seed) % (2**31)}, data, num_boost_round=NUM_TREES)
    ensemble = TreeEnsemble.from_booster(booster, coalitions.shape[1], offset)
    for tree in ensemble.trees:
        leaf = tree[0] < 0
        tree[3][leaf] /= scale
    return ensemble
