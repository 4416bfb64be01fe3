"""For the tests of an app that talks to a model: a tokenstream server in-process.

``tokenstream.testing.server.TokenstreamServer`` runs one on a free port in a background
thread; the pytest plugin (``tokenstream.testing.pytest_plugin``, registered through the
``pytest11`` entry point) makes it the ``tokenstream_server`` fixture. Importing this package
loads nothing of the server: that happens when a server starts.
"""
