"""Pinball-compatible parser: reads legacy workflow definitions into typed values.

Knows nothing of gRPC or protobuf. Definition code runs only in sandbox workers
(``legacy_parser.sandbox``); everything else here is pure and safe to import anywhere.
"""
