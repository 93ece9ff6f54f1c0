"""The asyncio peer: this contract's subset, written the way the existing Python
implementation does it (FastAPI `StreamingResponse` on uvicorn, `redis.asyncio`,
one PubSub connection per waiting session). Bench-only: needs the `bench` extra.
"""
