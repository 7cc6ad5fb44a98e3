"""FetchConfig as a view of Settings (pixelbatch.fetch.config)."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from pixelbatch.fetch import FetchConfig
from pixelbatch.settings import Settings


def test_config_has_no_defaults_of_its_own() -> None:
    """Every value comes from Settings, so the two cannot drift apart again."""
    for field in dataclasses.fields(FetchConfig):
        assert field.default is dataclasses.MISSING, field.name
        assert field.default_factory is dataclasses.MISSING, field.name


def test_every_field_comes_from_its_setting() -> None:
    settings = Settings(
        fetch_connect_timeout=1.5,
        fetch_read_timeout=2.5,
        fetch_total_timeout=9.0,
        fetch_max_bytes=1234,
        fetch_max_redirects=2,
        fetch_retries=7,
        fetch_backoff_base=0.25,
        fetch_backoff_max=4.0,
        fetch_concurrency=3,
        fetch_per_host=2,
        user_agent="ua/1",
        fetch_allow=["127.0.0.1:9"],
        fetch_allowed_ports=[8443],
        max_url_length=999,
    )
    assert FetchConfig.from_settings(settings) == FetchConfig(
        connect_timeout=1.5,
        read_timeout=2.5,
        total_timeout=9.0,
        max_bytes=1234,
        max_redirects=2,
        retries=7,
        backoff_base=0.25,
        backoff_max=4.0,
        concurrency=3,
        per_host=2,
        user_agent="ua/1",
        allow=["127.0.0.1:9"],
        allowed_ports=[8443],
        max_url_length=999,
    )


def test_user_agent_is_the_settings_one() -> None:
    assert FetchConfig.from_settings(Settings()).user_agent == Settings().user_agent


@pytest.mark.parametrize(
    "setting",
    [
        {"fetch_connect_timeout": 0},
        {"fetch_read_timeout": -1},
        {"fetch_total_timeout": 0},
        {"fetch_max_bytes": 0},
        {"fetch_max_redirects": -1},
        {"fetch_retries": -1},
        {"fetch_backoff_base": -0.1},
        {"fetch_backoff_max": -1},
        {"fetch_concurrency": 0},
        {"fetch_per_host": 0},
        {"fetch_allowed_ports": [0]},
        {"fetch_allowed_ports": [65536]},
        {"user_agent": ""},
    ],
)
def test_settings_refuse_limits_the_fetcher_cannot_work_with(setting: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**setting)  # type: ignore[arg-type]


def test_allowed_ports_still_come_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIXELBATCH_FETCH_ALLOWED_PORTS", "80, 443,8443")
    assert Settings().fetch_allowed_ports == [80, 443, 8443]
    monkeypatch.setenv("PIXELBATCH_FETCH_ALLOWED_PORTS", "80,70000")
    with pytest.raises(ValidationError):
        Settings()
