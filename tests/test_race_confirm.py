"""A raced confirmation end to end on the embedded model: seed sets round by round, only the candidates still in,
the race's decision as the verdict, and every reader replaying the same race from the stored rows."""

from __future__ import annotations

import pytest
from conftest import tiny_spec_dict

import skipsearch
from skipsearch.errors import UserError
from skipsearch.exchange import coeffile
from skipsearch.search.race import RacePlan
from skipsearch.search.racing import judged_values, replay
from skipsearch.specfile import parse_spec


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('race') / 'r.db'}"
    spec = parse_spec(tiny_spec_dict("raced", search={"trials": 5},
                                     confirm={"race": True, "top_k": 3, "n": 64, "seed_sets": 6, "every": 2}))
    result = skipsearch.run(spec, storage=url)
    return url, spec, result


def test_the_race_evaluates_round_by_round_and_judges_the_debiased_dfid(raced):
    url, spec, result = raced
    rows = skipsearch.confirmations(url, "raced", per_seed_set=True)
    judged = f"fid_debiased@{spec.metric.extractor}"
    assert rows[judged].notna().all()  # every held-out row carries what the race judges
    base = int(rows[rows.role == "baseline"].trial_number.iloc[0])
    per_set = rows.groupby("seed_set").trial_number.apply(set)
    assert per_set.index.tolist() == list(range(len(per_set)))  # seed sets in order, none skipped
    assert all(base in s for s in per_set)  # the baseline on every seed set the race ran
    assert all(later <= earlier for earlier, later in zip(per_set, per_set.iloc[1:]))  # candidates only leave
    table = result.confirmation
    assert {"race_delta_fid", "race_low", "race_high", "race_status", "race_text"} <= set(table.columns)
    verdict = result.verdict
    assert verdict.text.endswith(table.race_text.iloc[0]) or table.race_text.iloc[0] in verdict.text
    # the reader replays the race the same way: same status, same winner
    again = skipsearch.best(url, "raced")
    assert again.provenance.trial == verdict.trial


def test_a_reader_replays_the_stored_race_exactly(raced):
    url, spec, result = raced
    rows = skipsearch.confirmations(url, "raced", per_seed_set=True)
    judged = judged_values(rows, spec.metric.extractor)
    table = result.confirmation
    base = int(table[table.role == "baseline"].trial_number.iloc[0])
    entered = [int(t) for t in table.trial_number if t != base and (int(t), 0) in judged]
    race = replay(RacePlan(max_rounds=6, candidates=len(entered), every=2), base, entered, judged)
    assert race.done and race.rounds == rows.seed_set.max() + 1
    for r in table.itertuples():
        if r.role != "baseline" and r.trial_number in race.left:
            assert r.race_status.startswith(f"left after {race.left[r.trial_number][0]} seed sets")
    assert table.race_text.iloc[0] == race.last.text


def test_a_race_with_too_few_seed_sets_is_refused_naming_the_field():
    with pytest.raises(UserError, match="confirm.*2 seed sets"):
        parse_spec(tiny_spec_dict("bad", confirm={"race": True, "seed_sets": 1}))
    with pytest.raises(UserError, match="confirm.*every"):
        parse_spec(tiny_spec_dict("bad", confirm={"race": True, "seed_sets": 4, "every": 5}))


@pytest.mark.parametrize("given, race, every, sets", [
    ({}, True, 4, 16),                                  # the defaults: 16 seed sets of 500, judged after every 4th
    ({"seed_sets": 3}, True, 3, 3),                     # every follows seed_sets down: one look, at the third
    ({"seed_sets": 1}, False, 1, 1),                    # one set cannot race: the fixed check it asked for
    ({"seed_sets": 3, "race": False}, False, 3, 3),     # said explicitly
    ({"seed_sets": 3.0}, True, 3, 3),                   # YAML's 3.0 is 3
    ({"seed_sets": 16, "every": 8}, True, 8, 16),       # given values kept
    ({"n": 2000}, True, 4, 4),                          # the old habit: 8,000 samples an entrant at most, not 32,000
    ({"n": 1000}, True, 4, 8),                          # two looks, at 4 and 8 sets of 1,000
    ({"n": 6000}, True, 2, 2),                          # never fewer than the two sets an interval needs
    ({"n": 250}, True, 4, 16),                          # a smaller n keeps 16 rounds (looks stay few)
    ({"n": 2000, "seed_sets": 10}, True, 4, 10),        # seed_sets given: kept
])
def test_the_confirmation_races_by_default_where_it_can(given, race, every, sets):
    from skipsearch.spec import ConfirmSpec

    c = ConfirmSpec.model_validate(given)
    assert (c.race, c.every, c.seed_sets) == (race, every, sets)
    assert c.n == given.get("n", 500)


def test_a_bad_confirm_n_is_named_not_guessed_around():
    def without_seed_sets(**confirm) -> dict:  # so that seed_sets is derived from n
        spec = tiny_spec_dict("bad", confirm=confirm)
        del spec["confirm"]["seed_sets"]
        return spec

    for bad in ("lots", -5, 0, True, float("inf"), float("nan"), 2.5):  # YAML's .inf and .nan too
        with pytest.raises(UserError, match="confirm.*n"):
            parse_spec(without_seed_sets(n=bad))
    for bad in (float("inf"), float("nan")):
        with pytest.raises(UserError, match="confirm.*seed_sets"):
            parse_spec(tiny_spec_dict("bad", confirm={"seed_sets": bad}))


def test_a_study_stored_before_races_existed_reads_as_the_fixed_confirmation_it_ran(tmp_path):
    """An older skipsearch stored specs without ``confirm.race``; their held-out rows were judged the fixed way.
    Read through today's raced default they would be replayed as a race with nothing to judge, so the readers
    take such a spec as ``race: false``: the same table and verdict as before the default changed."""
    import json
    import sqlite3
    from contextlib import closing

    url = f"sqlite:///{tmp_path / 'old.db'}"
    spec = parse_spec(tiny_spec_dict("old", search={"trials": 3}, confirm={"race": False, "seed_sets": 2}))
    first = skipsearch.run(spec, storage=url)
    assert "race_status" not in first.confirmation.columns
    with closing(sqlite3.connect(tmp_path / "old.db")) as db, db:
        (raw,) = db.execute("SELECT spec_json FROM skipsearch_studies WHERE study_name = 'old'").fetchone()
        stored = json.loads(raw)
        for key in ("race", "every", "procedure", "second_opinion"):  # what the confirm section lacked then
            stored["confirm"].pop(key)
        db.execute("UPDATE skipsearch_studies SET spec_json = ? WHERE study_name = 'old'", (json.dumps(stored),))
    table = skipsearch.confirmations(url, "old")
    assert table.race_status.isna().all() and table.race_rounds.isna().all()  # the columns, empty: no race
    from skipsearch import frames
    assert list(table.columns)[:len(frames.CONFIRMATION_COLUMNS)] == list(frames.CONFIRMATION_COLUMNS)
    assert table.delta_fid_low.tolist() == first.confirmation.delta_fid_low.tolist()
    assert skipsearch.best(url, "old").verdict.text == first.verdict.text


def test_the_exported_file_carries_the_race_not_an_uncorrected_interval(raced, tmp_path):
    url, spec, result = raced
    path = skipsearch.export(url, "raced", tmp_path / "w.yaml")
    confirmation = coeffile.read(path).provenance.confirmation
    row = result.confirmation.set_index("trial_number").loc[result.verdict.trial]
    assert confirmation.delta_fid_low is None and confirmation.delta_fid_high is None
    assert confirmation.race.delta == row.race_delta_fid and confirmation.race.status == row.race_status
    assert confirmation.race.decision == row.race_text


def test_a_search_that_goes_on_after_the_race_does_not_change_its_entrants(raced, tmp_path):
    """The race's candidates are stored when it starts: trials searched later, even better ones, never enter a
    race already run, and its verdict and rows stay as they were (on a copy of the raced study's database)."""
    import sqlite3
    from contextlib import closing

    from skipsearch.search.racing import stored_entrants
    from skipsearch.storage import Store

    url, spec, first = raced
    copy = tmp_path / "later.db"
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)  # the write-ahead log's pages included
    url = f"sqlite:///{copy}"
    store = Store(url, create=False)
    base, entered = stored_entrants(store.extras_frame("raced"), spec.confirm.n)
    store.close()
    assert base == 0 and sorted(entered) == sorted(int(t) for t in first.confirmation.trial_number if t != 0)
    rows = skipsearch.confirmations(url, "raced", per_seed_set=True)
    more = skipsearch.run(spec.model_copy(update={"search": spec.search.model_copy(update={"trials": 8})}),
                          storage=url)
    assert len(skipsearch.trials(url, "raced")) == 8
    again = skipsearch.confirmations(url, "raced", per_seed_set=True)
    assert set(again.trial_number) == set(rows.trial_number) and len(again) == len(rows)  # no new entrant
    assert more.verdict.text == first.verdict.text
