"""Start / stop from the results page: through `db.experiments` as the admin API, for a signed-in admin of the
tenant only, and never touching another tenant's experiment of the same key."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from db.experiments import create_experiment, get_experiment, start_experiment
from tests.dashboards.helpers import TIMEOUT_S, texts
from tests.dashboards.seed import APP_DIR, EMPTY_EXPERIMENT, EMPTY_TENANT, EXPERIMENT, TENANT

pytestmark = pytest.mark.integration


def _page(tenant: str, allowed: list[str] | None, key: str) -> AppTest:
    at = AppTest.from_file(str(APP_DIR / "pages" / "experiment.py"), default_timeout=TIMEOUT_S)
    at.session_state["tenant_id"] = tenant
    at.session_state["allowed_tenants"] = allowed
    at.session_state["experiment_key"] = key
    return at.run()


def _status(sessions, tenant: str, key: str) -> str:
    with sessions() as session:
        return get_experiment(session, tenant, key).status


def test_admin_starts_a_draft_and_stops_a_running_experiment_of_its_tenant_only(seeded, sessions):
    # the other tenant runs an experiment under the same key
    with sessions() as session, session.begin():
        create_experiment(session, EMPTY_TENANT, EXPERIMENT, arms=[{"name": "baseline", "weight": 0.5},
                                                                   {"name": "visual", "weight": 0.5}])  # fmt: skip
        start_experiment(session, EMPTY_TENANT, EXPERIMENT)

    at = _page(TENANT, [TENANT], EMPTY_EXPERIMENT)
    assert not at.exception
    start = next(b for b in at.button if b.label == "Start experiment")
    start.click().run()
    assert not at.exception, at.exception
    assert _status(sessions, TENANT, EMPTY_EXPERIMENT) == "running"
    assert f"Experiment {EMPTY_EXPERIMENT} started." in texts(at)

    at = _page(TENANT, [TENANT], EXPERIMENT)
    stop = next(b for b in at.button if b.label == "Stop experiment")
    assert stop.disabled  # stopping is final: it needs the confirmation first
    at.checkbox[0].check().run()
    next(b for b in at.button if b.label == "Stop experiment").click().run()
    assert not at.exception, at.exception
    assert _status(sessions, TENANT, EXPERIMENT) == "stopped"
    assert _status(sessions, EMPTY_TENANT, EXPERIMENT) == "running"  # same key, other tenant: untouched
    assert "Stopped" in texts(at) and not [b for b in at.button if b.label == "Stop experiment"]


def test_no_controls_for_a_tenant_the_session_does_not_administer(seeded, sessions):
    with sessions() as session, session.begin():
        create_experiment(session, EMPTY_TENANT, "theirs", arms=[{"name": "baseline", "weight": 0.5},
                                                                 {"name": "visual", "weight": 0.5}])  # fmt: skip
    # a session signed in for acme whose tenant choice was tampered to the other tenant
    at = _page(EMPTY_TENANT, [TENANT], "theirs")
    assert not at.exception
    assert "Start experiment" not in [b.label for b in at.button]
    assert f"This sign-in does not open tenant {EMPTY_TENANT}" in texts(at) and "theirs" not in texts(at)
    # and the data layer scopes by tenant: acme cannot start the other tenant's key
    from dashboards.data import change_status, get_settings

    refused = change_status(get_settings().database_url, TENANT, "theirs", "start")
    assert refused == f"no experiment 'theirs' for tenant {TENANT!r}"
    assert _status(sessions, EMPTY_TENANT, "theirs") == "draft"
