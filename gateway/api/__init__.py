"""The HTTP surface: OpenAI-compatible routes, request parsing, response shapes, errors."""
