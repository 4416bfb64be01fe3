"""The HTTP server: the aiohttp app, its routes, and what guards them (auth, CORS, limits,
metrics, the access log), and the control API for tests (the request journal, run-time
rules)."""
