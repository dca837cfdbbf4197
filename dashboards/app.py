"""The Streamlit entry point (served by `dashboards/server.py`): sign-in, tenant choice, page navigation."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.settings import StackNotRunning
from dashboards import auth
from dashboards.data import get_settings

PAGES = Path(__file__).resolve().parent / "pages"


def main() -> None:
    """Gate every page behind a credential, then hand over to st.navigation."""
    st.set_page_config(page_title="vitrine", page_icon=":material/storefront:", layout="wide")
    try:
        settings = get_settings()
    except StackNotRunning as exc:
        st.error(f"No database or broker configured: {exc}")
        st.stop()
    admin_key = settings.admin_key.get_secret_value()
    if not auth.signed_in(settings.database_url, admin_key):
        auth.sign_in_form(settings.database_url, admin_key, settings.dashboard_sign_in_limit)
        st.stop()
    auth.persist()  # right after a sign-in: the browser exchanges its ticket for the cookie
    tenant = auth.tenant_picker(settings.database_url)
    if tenant is None:
        st.info("No tenants yet. Create one with `vitrine tenant create NAME`, then reload this page.")
        st.stop()
    page = st.navigation(
        {
            "Analysts": [
                st.Page(
                    PAGES / "overview.py",
                    title="Experiments",
                    icon=":material/science:",
                    url_path="experiments",
                    default=True,
                ),
                st.Page(
                    PAGES / "experiment.py",
                    title="Experiment detail",
                    icon=":material/monitoring:",
                    url_path="experiment",
                ),
            ],
            "Operators": [
                st.Page(
                    PAGES / "catalog.py", title="Catalog explorer", icon=":material/image_search:", url_path="catalog"
                ),
                st.Page(
                    PAGES / "pipeline.py",
                    title="Pipeline health",
                    icon=":material/health_and_safety:",
                    url_path="pipeline",
                ),
                st.Page(
                    PAGES / "latent_map.py", title="Latent map", icon=":material/scatter_plot:", url_path="latent-map"
                ),
            ],
        }
    )
    page.run()


main()
