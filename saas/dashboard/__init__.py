"""The node's dashboard (issue 20): static pages served at `/` and the sign-in routes behind them (`api.py`)."""
