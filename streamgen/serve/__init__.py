"""`streamgen serve`: many live streams over WebSocket, batched across streams.

- `protocol`: the messages (pure; shared with `streamgen.remote.client`).
- `batcher`: a replica's table of stream states and its batched step (pure).
- `session`: one connection's streams, ids -> table rows (pure).
- `app`: the Ray Serve deployment and its FastAPI / WebSocket ingress
  (imports Ray; import it only to serve).

See `docs/serving.md`. Nothing here is imported by `import streamgen`.
"""
