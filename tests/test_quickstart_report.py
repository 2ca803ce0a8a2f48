"""The quickstart's answers follow the seed-paired intervals both ways, are inconclusive when the seeds disagree,
are marked "1 seed" with one seed, and say "not measured" when runs are missing; the tables carry the numbers."""
from liquid_train.quickstart.evaluate import chance_accuracy
from liquid_train.quickstart.report import answer_questions, attribute_mean, results_markdown

ATTRS = ("kind", "colour", "position", "count", "background")
SEEDS = (0, 1, 2)


def _acc(v):
    return {**{a: v for a in ATTRS}, "all": v ** 5}


def _scores(t2i, i2t):
    return {"t2i": {"cfg1": _acc(t2i), "cfg3": _acc(t2i / 2), "cfg7": _acc(t2i / 2)}, "i2t": _acc(i2t)}


def _runs(s, m, l, text_gap_s, text_gap_l, noise=(0.0, 0.01, -0.01)):
    out = {}
    for seed, e in zip(SEEDS, noise):
        out.update({f"s_1-1-1_seed{seed}": {"val": s + e, "text": 5.0 + text_gap_s + e},
                    f"m_1-1-1_seed{seed}": {"val": m + e, "text": 5.0 + e},
                    f"l_1-1-1_seed{seed}": {"val": l + e, "text": 4.0 + text_gap_l + e},
                    f"s_text_seed{seed}": {"text": 5.0 + e}, f"l_text_seed{seed}": {"text": 4.0 + e}})
    return out


def _accuracy(base, more_i2t, more_t2i, noise=(0.0, 0.02, -0.02)):
    out = {}
    for seed, e in zip(SEEDS, noise):
        out[f"m_1-1-1_seed{seed}"] = _scores(base[0] + e, base[1] + e)
        out[f"m_1-1-2_seed{seed}"] = _scores(more_i2t[0] + e, more_i2t[1] + e)
        out[f"m_1-2-1_seed{seed}"] = _scores(more_t2i[0] + e, more_t2i[1] + e)
    return out


def test_answers_follow_the_intervals_both_ways():
    acc = _accuracy((0.5, 0.5), (0.6, 0.4), (0.7, 0.45))
    answers = answer_questions(_runs(3.0, 2.5, 2.0, 0.3, 0.1), acc, SEEDS)
    assert [a["answer"] for a in answers] == ["yes", "yes", "no", "yes"]
    assert "95% CI" in answers[1]["measured"] and "3 seeds" in answers[1]["measured"]
    flipped = _accuracy((0.5, 0.5), (0.4, 0.4), (0.7, 0.55))
    answers = answer_questions(_runs(3.0, 3.1, 2.0, 0.1, 0.3), flipped, SEEDS)
    assert [a["answer"] for a in answers] == ["no", "no", "yes", "no"]


def test_seeds_that_disagree_give_inconclusive():
    # 1:1:2 helps T2I at seeds 0 and 1 and hurts at seed 2: the paired interval contains zero
    acc = _accuracy((0.5, 0.5), (0.55, 0.5), (0.5, 0.5), noise=(0.0, 0.0, 0.0))
    acc["m_1-1-2_seed2"] = _scores(0.40, 0.5)
    answers = answer_questions(_runs(3.0, 2.5, 2.0, 0.3, 0.1), acc, SEEDS)
    assert answers[1]["answer"] == "inconclusive"
    assert answers[2]["answer"] == "inconclusive"  # equal I2T at every seed: zero difference, zero width


def test_one_seed_answers_are_marked():
    acc = _accuracy((0.5, 0.5), (0.6, 0.4), (0.7, 0.45))
    answers = answer_questions(_runs(3.0, 2.5, 2.0, 0.3, 0.1), acc, (0,))
    assert [a["answer"] for a in answers] == ["yes (1 seed)", "yes (1 seed)", "no (1 seed)", "yes (1 seed)"]


def test_missing_runs_are_not_measured_and_markdown_has_numbers():
    runs = {"s_1-1-1_seed0": {"val": 3.0, "text": 5.1, "steps": 6, "loss": 3.2},
            "s_1-1-1_seed1": {"val": 3.2, "text": 5.3, "steps": 6, "loss": 3.4}}
    answers = answer_questions(runs, {}, (0, 1))
    assert [a["answer"] for a in answers] == ["not measured"] * 4
    chance = chance_accuracy()
    assert abs(chance["kind"] - 1 / 3) < 1e-12 and abs(chance["count"] - 1 / 3) < 1e-12
    assert abs(attribute_mean(chance) - (1 / 3 + 1 / 5 + 1 / 5 + 1 / 3 + 1 / 3) / 5) < 1e-12
    accuracy = {"s_1-1-1_seed0": _scores(0.25, 0.5), "s_1-1-1_seed1": _scores(0.35, 0.5)}
    fit = {"slope": -0.5, "intercept": 1.2, "r2": 0.81, "n": 4}
    md = results_markdown(runs, accuracy, answers, {"train": 12.5}, chance, (0, 1), _acc(0.75), fit)
    assert "| s_1-1-1 | 6 | 3.300 ± 0.141 | 3.100 ± 0.141 | 5.200 ± 0.141 |" in md
    assert "| s_1-1-1 | 0.300 ± 0.071 | 0.150 ± 0.035 | 0.150 ± 0.035 | 0.500 ± 0.000 |" in md
    assert "| 0.750 | 0.750 | 0.750 | 0.750 | 0.750 | 0.237 | 0.750 |" in md  # the VQ ceiling row
    assert "| s_1-1-1 | t2i | 0.300 |" in md and "R² = 0.810" in md and "| total | 12.5 |" in md
