from __future__ import annotations

import pytest

from celery_durable.exceptions import ConfigError, DurableError
from celery_durable.options import Option, validate
from celery_durable.settings import SETTINGS, durable_settings

OPTS = (
    Option("mode", str, "direct", "publish mode", choices=("direct", "wal")),
    Option("timeout", float, 1.0, "seconds", min=0.0),
    Option("limit", int, None, "bytes", nullable=True),
)


def test_defaults_filled_in() -> None:
    assert validate({}, OPTS, "transport") == {"mode": "direct", "timeout": 1.0, "limit": None}


def test_int_accepted_for_float() -> None:
    assert validate({"timeout": 2}, OPTS, "transport")["timeout"] == 2.0


def test_unknown_option_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown transport option.*bogus.*valid names: limit"):
        validate({"bogus": 1}, OPTS, "transport")


def test_ignored_keys_pass_through() -> None:
    assert "visibility_timeout" not in validate(
        {"visibility_timeout": 5}, OPTS, "transport", ignore=("visibility_timeout",)
    )


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"mode": "fast"}, "must be one of"),
        ({"timeout": "1"}, "expected float, got str"),
        ({"timeout": True}, "expected float, got bool"),
        ({"timeout": -1.0}, "must be >= 0.0"),
    ],
)
def test_bad_values(given: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(given, OPTS, "transport")


def test_config_error_is_a_durable_error_and_value_error() -> None:
    assert issubclass(ConfigError, DurableError)
    assert issubclass(ConfigError, ValueError)


def test_durable_settings_from_celery_conf() -> None:
    from celery import Celery

    app = Celery(set_as_current=False)
    app.conf.durable_restore_batch = 10
    values = durable_settings(app.conf)
    assert values["durable_restore_batch"] == 10
    assert len(values) == len(SETTINGS)
    app.conf.durable_restore_bacth = 10
    with pytest.raises(ConfigError, match="durable_restore_bacth"):
        durable_settings(app.conf)


def test_typed_settings_mirror_the_option_table() -> None:
    """Every Option in SETTINGS is a DurableSettings field (name minus ``durable_``)."""
    from dataclasses import fields

    from celery_durable.settings import DurableSettings

    assert [f"durable_{f.name}" for f in fields(DurableSettings)] == [o.name for o in SETTINGS]


def test_settings_for_is_typed_frozen_and_cached_per_app() -> None:
    from dataclasses import FrozenInstanceError

    from celery import Celery

    from celery_durable.settings import settings_for

    app = Celery(set_as_current=False)
    app.conf.durable_restore_backoff = 5
    first = settings_for(app)
    assert first.restore_backoff == 5.0 and isinstance(first.restore_backoff, float)
    assert first.restore_max_attempts == 5 and first.dlq_url == ""
    assert settings_for(app) is first  # validated once
    with pytest.raises(FrozenInstanceError):
        first.restore_backoff = 1.0  # type: ignore[misc]
    app.conf.durable_restore_backoff = 7.5  # a changed setting is read again
    assert settings_for(app).restore_backoff == 7.5
    other = Celery(set_as_current=False)
    assert settings_for(other).restore_backoff == 60.0
    app.conf.durable_restore_backof = 1
    with pytest.raises(ConfigError, match="durable_restore_backof"):
        settings_for(app)
