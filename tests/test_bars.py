"""The Shapes bars every bench judges against (omni_gpt2o.bars)."""

from omni_gpt2o.bars import HELD_OUT_BAR_NAME, held_out_gap, missed_hour_bars


def scores(one: float = 0.99, two: float = 0.9, seen: float = 0.95, held: float = 0.92) -> dict:
    metrics = {"colour": one, "shape": one, "position": one, "size": one, "full": one}
    return {"one_object": metrics, "two_object": {"full": two}, "seen": {"full": seen}, "held_out": {"full": held}}


def test_hour_bars_name_each_miss_and_hold_the_gap_to_five_points():
    assert missed_hour_bars(scores()) == []
    assert missed_hour_bars(scores(seen=0.95, held=0.90)) == []  # exactly 5 points is within the bar
    assert missed_hour_bars(scores(seen=0.98, held=0.90)) == [HELD_OUT_BAR_NAME]
    assert missed_hour_bars(scores(two=0.84)) == ["two-object full >= 85%"]
    # size and full are held to 90%, colour, shape and position to 95%
    assert missed_hour_bars(scores(one=0.92)) == [f"one-object {m} >= 95%" for m in ("colour", "shape", "position")]


def test_a_group_the_judge_did_not_see_misses_its_bars():
    judged = scores()
    del judged["two_object"], judged["held_out"]
    assert held_out_gap(judged) is None
    assert missed_hour_bars(judged) == ["two-object full >= 85%", HELD_OUT_BAR_NAME]
    assert abs(held_out_gap(scores(seen=0.9, held=0.8)) - 10.0) < 1e-9
