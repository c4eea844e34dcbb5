"""pytest-timetracer: each timetracer cassette is a test item, replayed against the app.

``pytest --timetracer-cassettes DIR --timetracer-app "uvicorn app:app --port 8000"``. As root the
agent replays with every dependency mocked; without root only the Python hook's HTTP and time
control is used (see :mod:`pytest_timetracer.hookmode`). The plugin is :mod:`.plugin`.
"""

__version__ = "0.1.0"
