"""Every exception the package raises is in the drawn tree (issue 9, structure)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from celery_durable import exceptions, spill
from celery_durable.exceptions import ConfigError, DurableError
from celery_durable.spill import SpillStore

DOCS = Path(__file__).resolve().parents[2] / "docs" / "src" / "concepts.md"


def ours() -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(exceptions).values()
        if inspect.isclass(obj) and issubclass(obj, DurableError)
    ]


def test_every_exception_class_is_exported_and_drawn_in_both_trees() -> None:
    doc = exceptions.__doc__ or ""
    concepts = DOCS.read_text()
    assert "\n    DurableError " in doc and "\nDurableError " in concepts  # the root
    for cls in ours():
        assert cls.__name__ in exceptions.__all__, cls
        if cls is DurableError:
            continue
        assert f"── {cls.__name__} " in doc, f"{cls.__name__} missing from the docstring tree"
        assert f"── {cls.__name__} " in concepts, f"{cls.__name__} missing from concepts.md"


def test_spill_exceptions_are_the_tree_s_classes() -> None:
    assert spill.StoreLocked is exceptions.StoreLocked
    assert spill.StoreDamaged is exceptions.StoreDamaged
    assert issubclass(exceptions.StoreLocked, exceptions.SpillError)
    assert issubclass(exceptions.StoreDamaged, exceptions.SpillError)


def test_a_bad_sync_mode_is_a_config_error_still_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spill_sync='sometimes'") as info:
        SpillStore(tmp_path / "s", sync="sometimes")
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "s").exists()
