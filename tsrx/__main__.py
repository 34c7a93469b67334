"""``python -m tsrx`` is the ``tsrx`` command."""

from tsrx.cli.main import main

main()
