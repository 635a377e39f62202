"""The Discord front-end: slash commands and buttons (``bot.py``, ``handlers.py``), delivery (``send.py``)."""
