"""The argilla backend without a server: registration, settings, ranking parsing. Publishing,
collecting and the web UI against a real Argilla server: tests/e2e/test_argilla.py."""

from __future__ import annotations

import pytest
from tunewright_argilla import ArgillaFeedback, _ranking

from tunewright.core.plugins import PluginManager


def test_registered_as_a_feedback_backend_that_is_not_simulated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("ARGILLA_API_KEY", "k" * 8)
    entry = PluginManager().load().feedback_backends.get("argilla")
    backend = entry.factory(api_url="http://127.0.0.1:1")
    assert isinstance(backend, ArgillaFeedback) and backend.simulated is False
    assert backend.api_url == "http://127.0.0.1:1" and backend.workspace == "tunewright"


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    with pytest.raises(ValueError, match="needs ARGILLA_API_URL and ARGILLA_API_KEY"):
        ArgillaFeedback()
    monkeypatch.setenv("ARGILLA_API_URL", "http://argilla:6900")
    monkeypatch.setenv("ARGILLA_API_KEY", "owner.key")
    assert ArgillaFeedback(workspace="team").api_url == "http://argilla:6900"
    with pytest.raises(ValueError, match="unknown argilla backend params: colour"):
        ArgillaFeedback(colour="red")


def test_a_spec_can_neither_carry_a_key_nor_send_the_owner_key_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Params come from job specs (stored, published in events, returned by Get RPCs)."""
    monkeypatch.setenv("ARGILLA_API_URL", "http://argilla:6900")
    monkeypatch.setenv("ARGILLA_API_KEY", "owner.secret")
    factory = PluginManager().load().feedback_backends.get("argilla").factory
    with pytest.raises(ValueError, match="may not carry api_key") as err:
        factory(api_key="inline.secret")
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match="only sent to ARGILLA_API_URL") as err:
        factory(api_url="http://attacker.example:6900")
    assert "secret" not in str(err.value)
    assert factory(api_url="http://argilla:6900/")._api_key == "owner.secret"
    assert factory()._api_key == "owner.secret"


def test_rankings_follow_rank_numbers_not_list_order() -> None:
    # what Argilla's UI stores: options in question order, each with its rank
    stored = [
        {"value": "response_0", "rank": 2},
        {"value": "response_1", "rank": 3},
        {"value": "response_2", "rank": 1},
    ]
    assert _ranking(stored) == [2, 0, 1]
    assert _ranking([{"value": "response_1"}, {"value": "response_0"}]) == [1, 0]
    assert _ranking(["response_1", "response_0"]) == [1, 0]
    assert _ranking([{"value": "response_0", "rank": 1}]) is None  # nothing to compare
    assert _ranking([{"value": "other", "rank": 1}, {"value": "response_0", "rank": 2}]) is None
    assert _ranking(None) is None


def test_it_has_the_review_extension_synth_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """synth refuses human_review on backends without these (REVIEW_NOT_SUPPORTED); the real
    review round trip: tests/e2e/test_argilla_review.py."""
    from tunewright.synth.synthetic import REVIEW_METHODS

    monkeypatch.setenv("ARGILLA_API_URL", "http://argilla:6900")
    monkeypatch.setenv("ARGILLA_API_KEY", "owner.key")
    backend = PluginManager().load().feedback_backends.get("argilla").factory()
    assert all(callable(getattr(backend, m, None)) for m in REVIEW_METHODS)
