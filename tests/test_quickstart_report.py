"""The quickstart's answers follow the measured numbers, both ways, and say "not measured" when runs are missing."""
from liquid_train.quickstart.evaluate import chance_accuracy
from liquid_train.quickstart.report import answer_questions, attribute_mean, results_markdown

ATTRS = ("kind", "colour", "position", "count", "background")


def _acc(v):
    return {**{a: v for a in ATTRS}, "all": v ** 5}


def _runs(s, m, l, text_gap_s, text_gap_l):
    return {"s_1-1-1": {"val": s, "text": 5.0 + text_gap_s}, "m_1-1-1": {"val": m, "text": 5.0},
            "l_1-1-1": {"val": l, "text": 4.0 + text_gap_l}, "s_text": {"text": 5.0}, "l_text": {"text": 4.0}}


def test_answers_follow_the_numbers():
    acc = {"m_1-1-1": {"t2i": _acc(0.5), "i2t": _acc(0.5)}, "m_1-1-2": {"t2i": _acc(0.6), "i2t": _acc(0.4)},
           "m_1-2-1": {"t2i": _acc(0.7), "i2t": _acc(0.45)}}
    answers = [a["answer"] for a in answer_questions(_runs(3.0, 2.5, 2.0, 0.3, 0.1), acc)]
    assert answers == ["yes", "yes", "no", "yes"]
    flipped = {"m_1-1-1": acc["m_1-1-1"], "m_1-1-2": {"t2i": _acc(0.4), "i2t": _acc(0.4)},
               "m_1-2-1": {"t2i": _acc(0.7), "i2t": _acc(0.55)}}
    answers = [a["answer"] for a in answer_questions(_runs(3.0, 3.1, 2.0, 0.1, 0.3), flipped)]
    assert answers == ["no", "no", "yes", "no"]


def test_missing_runs_are_not_measured_and_markdown_has_numbers():
    runs = {"s_1-1-1": {"val": 3.0, "text": 5.1, "steps": 6, "loss": 3.2}}
    answers = answer_questions(runs, {})
    assert [a["answer"] for a in answers] == ["not measured"] * 4
    chance = chance_accuracy()
    assert abs(chance["kind"] - 1 / 3) < 1e-12 and abs(chance["count"] - 1 / 3) < 1e-12
    assert abs(attribute_mean(chance) - (1 / 3 + 1 / 5 + 1 / 5 + 1 / 3 + 1 / 3) / 5) < 1e-12
    md = results_markdown(runs, {"s_1-1-1": {"t2i": _acc(0.25), "i2t": _acc(0.5)}, "vq_ceiling": {"t2i": _acc(0.75)}},
                          answers, {"train": 12.5}, chance)
    assert "| vq_ceiling | t2i | 0.750" in md and "| vq_ceiling | i2t" not in md
    assert "| s_1-1-1 | 6 | 3.200 | 3.000 | 5.100 |" in md and "| s_1-1-1 | t2i | 0.250" in md
    assert "| total | 12.5 |" in md
