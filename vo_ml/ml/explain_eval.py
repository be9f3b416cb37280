"""How well :mod:`vo_ml.ml.explain` explains, measured on an archive's own spectra.

Each of ``pairs`` spectra drawn at random is paired with its nearest neighbour in the latent space
(each encoded with its own mask, as the archive's ``ml_distance`` sees them); the neighbour is
explained against the spectrum, its reference, as the service explains a similarity answer. Four
measures, with the targets they are held to:

- completeness: |sum of the attributions - d^2| / d^2, at most 1%;
- faithfulness: the neighbour's 10% of common good pixels with the largest attributions, given the
  reference's values, close at least half of d^2 (median over pairs), while a random 10% close at
  most 15%: the attribution finds the pixels the distance comes from. d^2 is quadratic in the
  spectra's difference, so taking any 10% of it away uniformly closes about 19% of d^2 (10% of
  d), less the pixels' own terms: the random level is also given as a share of d, and as
  expected from the encoder's Jacobian alone, with no attribution (:func:`_random_closed`);
- localisation: of the 5 stretches of :data:`STRETCH` model pixels holding the most attribution,
  at least 70% fall on a named window of the line list. The share of all stretches that do is the
  chance level it is measured against (the windows cover much of an optical spectrum);
- cost: milliseconds per explained pair, at most 200 on 2 cores.

    python -m vo_ml.ml.explain_eval --store <archive>.<table>.zarr --model <model folder>
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vo_ml.ml.embedding import encode, load_model
from vo_ml.ml.explain import NODES, Explanation, distances2, explain, line_list
from vo_ml.ml.models import downsampling
from vo_ml.progress import tracked
from vo_ml.spectra.store import SpectrumStore

__all__ = ["PAIRS", "SEED", "EDITED", "STRETCH", "HOT", "ExplanationScores", "evaluate_explanations",
           "nearest_pairs", "main"]

#: Pairs measured, and the seed that draws them.
PAIRS = 200
SEED = 17
#: Share of the common good pixels the faithfulness test gives the reference's values.
EDITED = 0.10
#: Model pixels per stretch of the localisation test: about 30 A on MILES's grid, a Lick bandpass.
STRETCH = 8
#: Stretches of the localisation test, by attribution.
HOT = 5
#: Pairs whose encoder Jacobians are taken in one pass: with a copy of the row per latent
#: coordinate, 512 rows for a 16-dimensional latent space, which amortises the pass's fixed cost.
_JACOBIAN_ROWS = 32


@dataclass(frozen=True)
class ExplanationScores:
    """The measures of the module docstring, over ``pairs`` pairs."""

    pairs: int
    nodes: int
    completeness_max: float
    completeness_median: float
    top_closed_median: float
    random_closed_median: float
    top_closed_distance_median: float
    random_closed_distance_median: float
    random_expected_median: float
    random_expected_correlation: float
    own_share_median: float
    hot_on_lines: float
    hot_on_lines_chance: float
    named_share_median: float
    named_pixels: float
    ms_per_pair: float

    def lines(self) -> list[str]:
        """The scores in words, each with its target."""
        return [
            f"{self.pairs} pairs (spectrum and nearest latent neighbour), {self.nodes} Gauss-Legendre nodes",
            f"completeness error |sum a - d^2| / d^2: max {self.completeness_max:.2e}, "
            f"median {self.completeness_median:.2e} (target <= 1e-2)",
            f"top {EDITED:.0%} attributed pixels replaced close {self.top_closed_median:.1%} of d^2 "
            f"(median; target >= 50%); random {EDITED:.0%}: {self.random_closed_median:.1%} (<= 15%); "
            f"of d: top {self.top_closed_distance_median:.1%}, "
            f"random {self.random_closed_distance_median:.1%}",
            f"  random {EDITED:.0%} expected from the encoder's Jacobian: {self.random_expected_median:.1%} "
            f"(median; pixels' own share R of d^2 {self.own_share_median:.2f}); correlation with the "
            f"measured one across pairs {self.random_expected_correlation:.2f}",
            f"top {HOT} stretches of {STRETCH} pixels on a named window: {self.hot_on_lines:.1%} "
            f"(target >= 70%; chance {self.hot_on_lines_chance:.1%})",
            f"named windows hold {self.named_share_median:.1%} of d^2 (median) on "
            f"{self.named_pixels:.1%} of the pixels",
            f"{self.ms_per_pair:.1f} ms per pair (target <= 200)",
        ]


def nearest_pairs(latent: np.ndarray, count: int, seed: int = SEED) -> np.ndarray:
    """``count`` rows drawn at random, each with its nearest other row: shape (count, 2)."""
    rows = np.random.default_rng(seed).choice(len(latent), size=min(count, len(latent)), replace=False)
    distances = np.sum(np.square(latent[rows, None, :] - latent[None, :, :]), axis=2)
    distances[np.arange(len(rows)), rows] = np.inf
    return np.column_stack([rows, np.argmin(distances, axis=1)])


def _left(encoder: object, explanation: Explanation, flux: np.ndarray, ref_flux: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """The shares of d^2 left once the most attributed and random pixels, :data:`EDITED` of the
    common good ones each, have the reference's values."""
    good = np.flatnonzero(explanation.good)
    count = _edited(good.size)
    top = good[np.argsort(explanation.attribution[good])[::-1][:count]]
    edited = np.array([flux, flux])
    for row, pixels in enumerate((top, rng.choice(good, count, replace=False))):
        edited[row, pixels] = ref_flux[pixels]
    left = distances2(encoder, edited, ref_flux, explanation.good.astype(np.float32))
    return left / explanation.distance2


def _edited(good: int) -> int:
    """How many of ``good`` common good pixels the faithfulness test edits: :data:`EDITED` of
    them, at least one."""
    return max(1, round(EDITED * good))


def _own_shares(encoder: object, middle: np.ndarray, step: np.ndarray, good: np.ndarray,
                latent_dim: int) -> np.ndarray:
    """R = sum_i step_i^2 |J[:, i]|^2 / |J step|^2 for each pair: the pixels' own terms' share
    of d^2, linearised with the encoder's Jacobian J (latent x pixels) at the path's midpoint
    ``middle``, encoded with the weights ``good`` as
    :func:`vo_ml.ml.explain.integrated_gradients` encodes the path.

    J is the gradient of each latent coordinate from its own copy of the row, so a chunk of
    pairs takes one pass back through the encoder (a Jacobian call per pair is some 30 times
    slower). ``step`` is zero on the pixels bad in either spectrum."""
    from vo_ml.ml.framework import tf

    shares = []
    for start in range(0, len(middle), _JACOBIAN_ROWS):
        chunk = slice(start, start + _JACOBIAN_ROWS)
        rows = tf.constant(np.repeat(middle[chunk], latent_dim, axis=0), tf.float32)
        weights = tf.constant(np.repeat(good[chunk], latent_dim, axis=0), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(rows)
            latent = tf.reshape(encoder([rows, weights], training=False), (-1, latent_dim, latent_dim))
            diagonal = tf.reduce_sum(latent * tf.eye(latent_dim, dtype=latent.dtype))
        jacobian = tape.gradient(diagonal, rows).numpy().astype(np.float64)
        jacobian = jacobian.reshape(-1, latent_dim, middle.shape[1])
        difference = step[chunk].astype(np.float64)
        moved = np.einsum("rlp,rp->rl", jacobian, difference)
        own_terms = np.einsum("rp,rp->r", np.square(difference), np.sum(np.square(jacobian), axis=1))
        shares.append(own_terms / np.sum(np.square(moved), axis=1))
    return np.concatenate(shares)


def _random_closed(own_share: np.ndarray, good: np.ndarray) -> np.ndarray:
    """The share of d^2 a random :data:`EDITED` of the ``good`` common good pixels close on
    average, for an encoder linear about the midpoint, from the pixels' own share R of d^2.

    With m of n pixels drawn without replacement, a pixel is kept with probability
    p1 = (n - m) / n and a pair of pixels with p2 = p1 (n - m - 1) / (n - 1), so the edited
    difference keeps p2 d^2 + (p1 - p2) R d^2 on average: 0.19 - 0.09 R of d^2 is closed. The
    attribution plays no part, so this is the random control's level for the encoder, and
    at most 15% needs R of at least 0.44."""
    edited = np.array([_edited(count) for count in good])
    kept = (good - edited) / good
    kept_both = kept * (good - edited - 1) / (good - 1)
    return 1.0 - kept_both - (kept - kept_both) * own_share


def _stretches(explanation: Explanation) -> tuple[np.ndarray, np.ndarray]:
    """Each stretch's share of d^2 and whether it touches a named window, for the stretches
    holding a common good pixel."""
    pixels = explanation.wavelength.size // STRETCH * STRETCH
    named = line_list(explanation.medium).covers(explanation.wavelength)
    share = explanation.share[:pixels].reshape(-1, STRETCH).sum(axis=1)
    touches = named[:pixels].reshape(-1, STRETCH).any(axis=1)
    kept = explanation.good[:pixels].reshape(-1, STRETCH).any(axis=1)
    return share[kept], touches[kept]


def _named_share(explanation: Explanation) -> tuple[float, float]:
    """The share of d^2 in the named windows together, and of the common good pixels."""
    inside = line_list(explanation.medium).covers(explanation.wavelength) & explanation.good
    return float(explanation.share[inside].sum()), float(inside.sum() / explanation.good.sum())


def evaluate_explanations(store: SpectrumStore, model_dir: str | Path, pairs: int = PAIRS,
                          seed: int = SEED, nodes: int = NODES) -> ExplanationScores:
    """The measures of the module docstring on ``pairs`` spectra of ``store`` (on the store's
    grid) and their nearest neighbours, by the model in ``model_dir``."""
    encoder, _, card = load_model(str(model_dir))
    flux, mask = store.coarsened(downsampling(card["config"])).read(0, len(store))
    chosen = nearest_pairs(encode(flux, mask, model_dir)[:, :-1], pairs, seed)
    rng = np.random.default_rng(seed)
    explain(model_dir, flux[0], mask[0], flux[1], mask[1], nodes)  # the model loads outside the timing
    completeness, left, hot, chance, named, middle, step, good = [], [], [], [], [], [], [], []
    seconds = 0.0
    for reference, neighbour in tracked(chosen, "explain pairs", "pair"):
        started = time.perf_counter()
        explanation = explain(model_dir, flux[neighbour], mask[neighbour], flux[reference],
                              mask[reference], nodes)
        seconds += time.perf_counter() - started
        if explanation.distance2 <= 0:
            continue
        completeness.append(explanation.completeness_error)
        left.append(_left(encoder, explanation, flux[neighbour], flux[reference], rng))
        ends = np.where(explanation.good, [flux[neighbour], flux[reference]], 0.0)
        middle.append(ends.mean(axis=0))
        step.append(ends[0] - ends[1])
        good.append(explanation.good)
        share, touches = _stretches(explanation)
        hot.append(touches[np.argsort(share)[::-1][:HOT]].mean())
        chance.append(touches.mean())
        named.append(_named_share(explanation))
    left_array, named_array = np.array(left), np.array(named)
    closed, closed_distance = 1.0 - left_array, 1.0 - np.sqrt(left_array)
    good_array = np.array(good)
    own_share = _own_shares(encoder, np.array(middle), np.array(step), good_array, int(card["latent_dim"]))
    expected = _random_closed(own_share, good_array.sum(axis=1))
    return ExplanationScores(
        len(completeness), nodes, float(np.max(completeness)), float(np.median(completeness)),
        float(np.median(closed[:, 0])), float(np.median(closed[:, 1])),
        float(np.median(closed_distance[:, 0])), float(np.median(closed_distance[:, 1])),
        float(np.median(expected)), float(np.corrcoef(expected, closed[:, 1])[0, 1]),
        float(np.median(own_share)),
        float(np.mean(hot)), float(np.mean(chance)), float(np.median(named_array[:, 0])),
        float(np.median(named_array[:, 1])), 1e3 * seconds / len(chosen))


def main(argv: Sequence[str] | None = None) -> None:
    """The command line of the module docstring: the scores in words, or as JSON."""
    parser = argparse.ArgumentParser(description="Measure the explanations of latent similarity.")
    parser.add_argument("--store", type=Path, required=True, help="the archive's spectrum store (.zarr)")
    parser.add_argument("--model", type=Path, required=True, help="the trained model's folder")
    parser.add_argument("--pairs", type=int, default=PAIRS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    arguments = parser.parse_args(argv)
    scores = evaluate_explanations(SpectrumStore(arguments.store), arguments.model, arguments.pairs,
                                   arguments.seed, arguments.nodes)
    print(json.dumps(asdict(scores), indent=2) if arguments.json else "\n".join(scores.lines()))


if __name__ == "__main__":
    main()
