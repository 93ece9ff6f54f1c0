"""The HTTP API: routes, request helpers, the JSON envelope, models and OpenAPI."""
