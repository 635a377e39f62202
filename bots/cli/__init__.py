"""The command line as a chat front-end (platform ``cli``): ``imaginebot imagine``, ``retrain`` and
``models``. Like the other front-ends it parses, validates and enqueues through ``core``, then
renders what comes back, here in the terminal; it imports no torch."""
