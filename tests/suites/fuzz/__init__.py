"""`make fuzz`: schemathesis over every route of openapi.json, hand-made hostile requests, and
WebSocket frame fuzzing, against a local stack."""
