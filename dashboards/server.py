"""The dashboards as an ASGI app (`vitrine dashboard` runs `streamlit run dashboards/server.py`): the Streamlit
app of `app.py` plus the routes that set and clear the sign-in cookie (`dashboards/session_routes.py`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards.session_routes import ROUTES

APP = Path(__file__).resolve().parent / "app.py"

app = st.App(str(APP), routes=ROUTES)
