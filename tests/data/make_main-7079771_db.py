"""Made the migration test database with the code of commit 7079771 (see README.md here); kept for the record."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

import skipsearch  # noqa: E402
from conftest import tiny_dt_spec_dict, tiny_spec_dict  # noqa: E402
from skipsearch.spec import parse_spec  # noqa: E402

URL = "sqlite:///main-7079771.db"
skip = parse_spec(tiny_spec_dict("old-skip", metric={"n": 128, "rungs": [64], "batch_size": 64}, search={"trials": 4}))
print(skipsearch.run(skip, storage=URL).trials[["trial_number", "state", "fid", "coefficients_json"]].to_string())
dt = parse_spec(tiny_dt_spec_dict("old-dt", weights_dir="/tmp/mkold/weights", search={"trials": 3}))
print(skipsearch.run(dt, storage=URL).trials[["trial_number", "state", "fid", "source_fid"]].to_string())
