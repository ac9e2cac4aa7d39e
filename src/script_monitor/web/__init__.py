"""The web dashboard, JSON API and Prometheus metrics of ``script-monitor serve``.

Imported only by ``serve`` (commands/serve.py): the CLI's other commands never load
Starlette, uvicorn, Jinja2 or prometheus_client.
"""
