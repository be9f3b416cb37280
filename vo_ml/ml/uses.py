"""Uses and limitations of the similarity service, in plain language, each claim with its number.

Every sentence is written from the figures of one ``vo-ml evaluate`` run (its ``report.json``):
the only numbers in the templates are the thresholds the claims are judged by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vo_ml.ml import invariance, probes

__all__ = ["markdown"]


def markdown(figures: dict) -> list[str]:
    """The section, one list of claims per trained model (figures as read from report.json)."""
    lines = ["## Uses and limitations", "",
             "What this run measured, for each model; the PCA baseline of the same dimension in "
             "brackets where it was measured too.", ""]
    models = [r for r in figures["representations"] if r["kind"] == "latent"]
    if not models:
        return lines + ["No model was evaluated.", ""]
    for model in models:
        pca = next((r for r in figures["representations"]
                    if r["kind"] == "pca" and r["dimensions"] == model["dimensions"]), None)
        lines += [f"### {model['name']}", ""]
        lines += [f"- {claim}" for claim in _claims(figures, model, pca)]
        lines.append("")
    return lines


def _claims(figures: dict, model: dict, pca: dict | None) -> list[str]:
    claims = [_labels(model, pca)]
    kinds = (figures.get("invariance") or {}).get("kinds", {})
    if kinds:
        claims += [_holds_up_to(kinds, kind, model["name"], what, reach) for kind, what, reach in (
            ("velocity", "Velocity shifts", "up to"), ("S/N", "Noise levels", "down to"),
            ("resolution", "Resolutions", "down to")) if kind in kinds]
        if "tilt" in kinds:
            claims.append(_tilts(kinds["tilt"], model["name"]))
        if "coverage" in kinds:
            claims.append(_coverage(kinds["coverage"], model["name"]))
    else:
        claims.append("Invariance was not measured in this run.")
    retrieval = figures.get("retrieval")
    if retrieval:
        claims += _cross_instrument(retrieval["by"].get(model["name"], {}),
                                    (pca["name"], retrieval["by"].get(pca["name"], {})) if pca else None)
    else:
        claims.append("Cross-instrument retrieval was not measured in this run (no --real-spectra).")
    return claims


def _labels(model: dict, pca: dict | None) -> str:
    def scores(representation: dict) -> dict:
        return representation["scores"]["held-out FGK"]["5"]

    own = scores(model)
    text = (f"The latent space knows Teff to {own['teff']:.1%}, log g to {own['logg']:.2f} dex and "
            f"[Fe/H] to {own['feh']:.2f} dex: the median difference between a held-out FGK star "
            "and its 5 nearest neighbours")
    if pca:
        base = scores(pca)
        text += f" [{pca['name']}: {base['teff']:.1%}, {base['logg']:.2f} dex, {base['feh']:.2f} dex]"
    return text + "."


def _holds_up_to(kinds: dict, kind: str, name: str, what: str, reach: str) -> str:
    """How far along the kind's levels (mildest first) the neighbours are kept."""
    table = kinds[kind]
    recalls = table["by"][name]["recall_at_10"]
    held = _held(recalls, lambda r: r >= invariance.RECALL_THRESHOLD)
    keep = f"of the {invariance.NEIGHBOURS} nearest neighbours"
    if held is None:
        return (f"{what}: already at {table['levels'][0]} only {_share(recalls[0])} {keep} are "
                f"kept (below {invariance.RECALL_THRESHOLD:.0%}).")
    text = f"{what} {reach} {table['levels'][held]} keep {_share(recalls[held])} {keep}"
    if held + 1 < len(recalls):
        text += f"; at {table['levels'][held + 1]}, {_share(recalls[held + 1])}"
    return text + "."


def _tilts(table: dict, name: str) -> str:
    recalls = table["by"][name]["recall_at_10"]
    known = [(r, level) for r, level in zip(recalls, table["levels"], strict=True) if r is not None]
    worst, level = min(known) if known else (None, "any")
    return (f"Continuum tilts and flux-calibration errors ({', '.join(table['levels'])}) keep at "
            f"least {_share(worst)} of the {invariance.NEIGHBOURS} nearest neighbours (worst: {level}).")


def _coverage(table: dict, name: str) -> str:
    """The least coverage, from each end, that lands within the archive's distance scale."""
    ratios = table["by"][name]["distance_ratio"]
    parts = []
    for side in ("blue", "red"):
        levels = [i for i, label in enumerate(table["levels"]) if label.startswith(side)]
        held = _held([ratios[i] for i in levels], lambda d: d <= invariance.DISTANCE_THRESHOLD)
        if held is None:
            parts.append(f"keeping the {side} end, even {table['levels'][levels[0]]} lands "
                         f"{ratios[levels[0]]:.2f} archive distances away")
        elif held + 1 < len(levels):
            near, far = levels[held], levels[held + 1]
            parts.append(f"keeping the {side} end, {table['levels'][near]} lands {ratios[near]:.2f} "
                         f"archive distances from its full spectrum, but {table['levels'][far]} "
                         f"{ratios[far]:.2f}")
        else:
            parts.append(f"keeping the {side} end, even {table['levels'][levels[-1]]} lands within "
                         f"the archive's scale ({ratios[levels[-1]]:.2f})")
    return ("Partial coverage (distances in units of the archive's median nearest-neighbour "
            "distance): " + "; ".join(parts) + ". A spectrum that lands farther than "
            f"{invariance.DISTANCE_THRESHOLD:g} from its full-range counterpart is answered as "
            "another star would be.")


def _cross_instrument(answers: dict, baseline: tuple[str, dict] | None) -> list[str]:
    claims = []
    if "xshooter" in answers:
        x = answers["xshooter"]
        where = "is not in the archive" if x["rank"] is None else f"ranks {x['rank']} of {x['of']}"
        claims.append(f"Cross-instrument: for the X-shooter spectrum of BD+01 2916, the MILES "
                      f"spectrum of the same star {where} (accepted: within the "
                      f"{probes.XSHOOTER_MATCH_TOP} nearest){_baseline_rank(baseline)}.")
    if "dwarf_teff" in answers.get("nights", {}):
        n = answers["nights"]
        claims.append(f"Across {n['count']} HARPS nights of alpha Cen B, {n['passing']} find dwarfs "
                      f"whose median Teff is within {probes.TEFF_TOLERANCE:.0f} K of "
                      f"{probes.ALPHA_CEN_B_TEFF:.0f} K (medians {n['teff_min']:.0f}-"
                      f"{n['teff_max']:.0f} K).")
    for group, star in (("nights", "alpha Cen B's HARPS nights"), ("epochs", "KIC 8098300's LAMOST epochs")):
        together = answers.get(group, {})
        if together.get("recall_at_1") is not None:
            claims.append(f"Encoded together with the archive, {star} find another of them as "
                          f"nearest neighbour {together['recall_at_1']:.0%} of the time, and fill "
                          f"{together['recall_at_5']:.0%} of their 5 nearest.")
    outside = [ratio for group in answers.values() for ratio in group.get("distance_ratio", [])]
    if outside:
        outside.sort()
        claims.append(f"Spectra from other instruments sit {outside[len(outside) // 2]:.1f} times the "
                      "archive's median nearest-neighbour distance from their nearest archive row "
                      f"(from {outside[0]:.1f} to {outside[-1]:.1f}).")
    return claims


def _baseline_rank(baseline: tuple[str, dict] | None) -> str:
    x = baseline[1].get("xshooter") if baseline else None
    return "" if not x or x["rank"] is None else f" [{baseline[0]}: rank {x['rank']}]"


def _held(values: Sequence[float | None], good: Callable[[float], bool]) -> int | None:
    """The index of the last of ``values`` (in order) up to which every one is ``good``."""
    held = None
    for index, value in enumerate(values):
        if value is None or not good(value):
            break
        held = index
    return held


def _share(value: float | None) -> str:
    return "none" if value is None else f"{value:.0%}"
