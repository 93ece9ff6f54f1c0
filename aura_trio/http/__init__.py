"""Serving on Hypercorn's trio worker: all the code that relies on Hypercorn or Quart internals."""
