"""The committed generated code must be what `make proto` makes from proto/."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_the_proto_files():
    generator = _load_generator()
    expected = generator.generate()
    committed = {path.name: path.read_text() for path in generator.OUTPUT.glob("*.py*")}
    stale = sorted(name for name in expected.keys() | committed.keys()
                   if expected.get(name) != committed.get(name))
    assert not stale, f"token_fetcher/_proto is stale for {stale}: run `make proto`"


def test_generated_modules_import_as_package_members():
    from token_fetcher._proto import token_fetcher_pb2, token_fetcher_pb2_grpc

    assert token_fetcher_pb2.DESCRIPTOR.package == "token_fetcher.v1"
    assert token_fetcher_pb2_grpc.TokenFetcherStub
