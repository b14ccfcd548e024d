"""Kombu's own integration tests, vendored unchanged from the kombu sdist.

``common.py`` is kombu 5.7.0's ``t/integration/common.py`` (the transport-agnostic
mixins); ``redis_tests.py`` is the part of its ``t/integration/test_redis.py``
that wires those mixins to redis (priority order, batch publishing, the
``redis_client`` fixture).  Both are byte-for-byte upstream below their
headers: ``tests/integration/test_kombu_mixins.py`` runs them through
``durable+redis://``.  To update, replace the files from the matching sdist
(``pip download --no-deps --no-binary :all: kombu==X``) and keep the headers.
"""
