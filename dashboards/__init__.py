"""Streamlit dashboards: experiments (analysts) and catalog / pipeline health (operators)."""
