"""The Shapes bars: what the demo's budget and an hour of training are held to.

One place for them, with no torch import, so the benches that read finished runs (time_to_bar.py,
compute_seeds.py) and the one that trains (compute_to_bar.py) judge against the same figures.
Scores are the judge's dict (`omni_gpt2o.evaluate`): group -> metric -> fraction in [0, 1].
"""

from __future__ import annotations

# (name, group, metric, at least)
Bar = tuple[str, str, str, float]

DEMO_BARS: list[Bar] = [("one-object full >= 50%", "one_object", "full", 0.50),
                        ("two-object full >= 30%", "two_object", "full", 0.30)]
HOUR_BARS: list[Bar] = [("one-object colour >= 95%", "one_object", "colour", 0.95),
                        ("one-object shape >= 95%", "one_object", "shape", 0.95),
                        ("one-object position >= 95%", "one_object", "position", 0.95),
                        ("one-object size >= 90%", "one_object", "size", 0.90),
                        ("one-object full >= 90%", "one_object", "full", 0.90),
                        ("two-object full >= 85%", "two_object", "full", 0.85)]
# The last hour bar: held-out colour-shape pairs (full prompt) at most this many points under seen ones.
HELD_OUT_GAP_BAR = 5.0
HELD_OUT_BAR_NAME = f"held-out within {HELD_OUT_GAP_BAR:g} of seen"


def score_of(scores: dict, group: str, metric: str) -> float:
    """A judged figure, 0 where the judge had no prompts of that group."""
    return scores.get(group, {}).get(metric) or 0.0


def held_out_gap(scores: dict) -> float | None:
    """Points by which held-out pairs trail seen pairs (full prompt); None where either was not judged."""
    seen, held = scores.get("seen", {}).get("full"), scores.get("held_out", {}).get("full")
    return None if seen is None or held is None else 100 * (seen - held)


def meets_gap(scores: dict) -> bool:
    gap = held_out_gap(scores)
    return gap is not None and gap <= HELD_OUT_GAP_BAR + 1e-9  # 100 * (0.95 - 0.90) is 5.000000000000004


def missed_bars(scores: dict, bars: list[Bar]) -> list[str]:
    return [name for name, group, metric, bar in bars if score_of(scores, group, metric) < bar]


def missed_hour_bars(scores: dict) -> list[str]:
    """Names of the hour bars these scores miss, the held-out gap included; empty when all are met."""
    return missed_bars(scores, HOUR_BARS) + ([] if meets_gap(scores) else [HELD_OUT_BAR_NAME])
