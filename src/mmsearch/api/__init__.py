"""The HTTP API and web page: `mmsearch.api.app.create_app(settings)`, served by `mmsearch serve`.

Nothing is imported here, so `import mmsearch.api` stays light; see docs/SERVING.md for the endpoints.
"""

__all__: list[str] = []
