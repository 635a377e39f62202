"""Text-to-image engines. Each module holds one engine; :mod:`worker.engines.loaded` loads them."""
