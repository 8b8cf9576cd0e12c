"""The photo-feed load test (``scalecore loadtest``, extra ``scalecore[load]``).

``graph``       the synthetic population: a Pareto follow graph, 80/20 profile views
``seed``        creates that population on the target over its HTTP API
``locustfile``  the virtual user (the request mix); also runs under ``locust -f`` and its UI
``scenario``    state the virtual users share: the population, the recorder, the lag probe
``scrape``      reads the target's /metrics (cache hit rate, database queries per request)
``report``      report.json, CSVs and an offline HTML page with SVG ``charts``
``target``      refuses a target off loopback unless told
``headless``    the command: seed, load for a bounded time, report

Importing this package imports nothing heavy; ``headless`` and ``locustfile`` import locust,
which patches the standard library for gevent.
"""
