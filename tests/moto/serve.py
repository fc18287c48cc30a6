"""moto's server (as `moto_server` runs it), with every request handled under one lock.

moto checks a condition (DynamoDB ConditionExpression, S3 If-None-Match) and then writes,
without a lock in between, and its server is threaded: two concurrent conditional creates of
one key can both win. Real DynamoDB and S3 make each conditional write atomic, and the race
tests assert exactly one winner, so this launcher serialises request handling. Connections
are still accepted and read concurrently; only the application call is serialised.

Usage: serve.py HOST PORT
"""

import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


class Serialised:
    """A WSGI middleware that runs the wrapped application under one lock, response included."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # Materialise the body inside the lock: a lazy iterable would run outside it.
            return list(self.app(environ, start_response))


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    run_simple(
        host,
        port,
        Serialised(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
