"""The floor: a minimal grpcio server that answers with ready-made response bytes.

    python -m benchmarks.floor --port P --answers FILE [--threads 16]

FILE is JSON ``{"/pkg.Service/Method": {"<request hex>": "<response hex>"}}``: bytes
captured from the real server. Same thread pool, concurrency limit and message-size
options as ``token_fetcher.server``; no parsing, no lookups beyond one dict, no
interceptors, health, reflection or metrics. What the real server costs above this is
what its own code adds.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from concurrent import futures

import grpc


def _identity(data: bytes) -> bytes:
    return data


def serve(port: int, answers: dict[str, dict[bytes, bytes]], threads: int,
          max_concurrent: int, max_bytes: int) -> grpc.Server:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=max_concurrent,
        options=[("grpc.max_send_message_length", max_bytes),
                 ("grpc.max_receive_message_length", max_bytes),
                 ("grpc.so_reuseport", 0)])

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            table = answers.get(details.method)
            if table is None:
                return None

            def unary(request, context):
                return table[request]

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=_identity, response_serializer=_identity)

    server.add_generic_rpc_handlers((Handler(),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    server.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answers", required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--max-concurrent", type=int, default=256)
    parser.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    with open(args.answers) as handle:
        raw = json.load(handle)
    answers = {method: {bytes.fromhex(k): bytes.fromhex(v) for k, v in table.items()}
               for method, table in raw.items()}
    server = serve(args.port, answers, args.threads, args.max_concurrent, args.max_bytes)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.stop(0).wait()


if __name__ == "__main__":
    main()
