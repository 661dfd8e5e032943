"""A ``sample_many`` / ``sbc`` output folder is reused only by a run with the same settings: what the user changed
refuses the folder, naming it; what a later version of Resilient added to the default policy does not."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from resilient import jsonio
from resilient.batch import FitStore
from resilient.errors import ResilientError, ResilientWarning
from resilient.policy import Policy


def _manifest(policy: Policy) -> dict:
    return {"kind": "sample_many", "model": "examples/sbc_models.py:normal", "backend": None,
            "run": {"draws": 100, "tune": 100, "chains": 2}, "policy": asdict(policy), "random_seed": 3}


def _write_as_an_earlier_version(folder) -> None:
    """The folder's manifest as a version before ``rhat_goal``, ``retry_divergences`` and ``more_draws`` wrote it."""
    old = json.loads(jsonio.dumps(_manifest(Policy())))
    for name in ("rhat_goal", "retry_divergences"):
        del old["policy"][name]
    old["policy"]["remedies"] = [r for r in old["policy"]["remedies"] if r != "more_draws"]
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(old))


def test_a_folder_of_an_earlier_versions_default_policy_is_reused_with_a_warning(tmp_path):
    _write_as_an_earlier_version(tmp_path / "out")
    with pytest.warns(ResilientWarning, match=r"earlier version of Resilient whose default policy lacked the remedy `more_draws`; the option "
                                             r"`retry_divergences`; its finished fits are reused"):
        FitStore(tmp_path / "out", _manifest(Policy())).close()


def test_a_policy_the_user_changed_still_refuses_the_folder_and_names_the_field(tmp_path):
    _write_as_an_earlier_version(tmp_path / "out")
    with pytest.raises(ResilientError, match=r"policy\.max_attempts differ"):
        FitStore(tmp_path / "out", _manifest(Policy(max_attempts=2)))
    with pytest.raises(ResilientError, match=r"policy\.remedies differ"):
        FitStore(tmp_path / "out", _manifest(Policy(remedies=("target_accept",))))
    with pytest.raises(ResilientError, match=r"policy\.rhat_goal differ"):
        FitStore(tmp_path / "out", _manifest(Policy(rhat_goal=1.02)))


def test_a_remedies_list_the_user_narrowed_is_not_taken_for_an_earlier_default(tmp_path):
    """Only the remedies this version added (``ADDED_REMEDIES``) make a stored default list an earlier version's:
    a folder run with ``Policy(remedies=(...))`` and run again with the defaults is refused."""
    FitStore(tmp_path / "out", _manifest(Policy(remedies=("target_accept",)))).close()
    with pytest.raises(ResilientError, match=r"policy\.remedies differ"):
        FitStore(tmp_path / "out", _manifest(Policy()))
