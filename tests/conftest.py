"""What every test shares: the process's signal handlers are the same after a test as before.

A console script (`creps.cli.entry_point`) ignores SIGINT and SIGTERM once its command is
done, since its process ends with it; a test that calls such a `main()` in this process
would otherwise leave them ignored for every later test.
"""

import signal

import pytest


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
