from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from baton.domain.errors import BatonError
from baton.domain.services import BatonApp
from tests.unit.support import FakeClock, new_app, notification_count


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> BatonApp:
    return new_app(clock=clock)


@pytest.fixture
def rejected(app: BatonApp) -> Callable[..., Any]:
    """``with rejected(InvalidTransition, 409) as caught: ...``: raises that error
    (``caught.value``), appends nothing."""

    @contextmanager
    def check(kind: type[BatonError], code: int) -> Iterator[pytest.ExceptionInfo[BatonError]]:
        before = notification_count(app)
        with pytest.raises(kind) as caught:
            yield caught
        assert caught.value.code == code
        assert caught.value.to_dict()["code"] == code
        assert notification_count(app) == before

    return check
