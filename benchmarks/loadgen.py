"""Load generator, run in its own process(es) so the client's GIL is not the server's.

    python -m benchmarks.loadgen latency --target T --method M --request HEX --calls N
    python -m benchmarks.loadgen throughput --target T --method M --request HEX \
        --threads 8 --start EPOCH --duration S

Requests and responses stay raw bytes (no protobuf work on the client side), so the
client costs as little as grpcio allows. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import grpc

OPTIONS = [("grpc.max_send_message_length", 64 * 1024 * 1024),
           ("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def _call(channel: grpc.Channel, method: str):
    return channel.unary_unary(method)  # no serializers: bytes in, bytes out


def latency(target: str, method: str, request: bytes, calls: int, warmup: int) -> dict:
    channel = grpc.insecure_channel(target, options=OPTIONS)
    call = _call(channel, method)
    size = 0
    for _ in range(warmup):
        size = len(call(request, timeout=10))
    samples = []
    clock = time.perf_counter
    for _ in range(calls):
        started = clock()
        call(request, timeout=10)
        samples.append(clock() - started)
    channel.close()
    return {"samples": samples, "response_bytes": size}


def throughput(target: str, method: str, request: bytes, threads: int, start: float,
               duration: float) -> dict:
    channel = grpc.insecure_channel(target, options=OPTIONS)
    call = _call(channel, method)
    for _ in range(20):
        call(request, timeout=10)
    counts = [0] * threads
    errors = [0] * threads

    def worker(index: int) -> None:
        while time.time() < start:
            time.sleep(0.001)
        end = start + duration
        done = 0
        while time.time() < end:
            try:
                call(request, timeout=10)
                done += 1
            except grpc.RpcError:
                errors[index] += 1
        counts[index] = done

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    channel.close()
    return {"calls": sum(counts), "errors": sum(errors)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("latency", "throughput"))
    parser.add_argument("--target", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--request", required=True, help="request bytes, hex")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--start", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    request = bytes.fromhex(args.request)
    if args.mode == "latency":
        result = latency(args.target, args.method, request, args.calls, args.warmup)
    else:
        result = throughput(args.target, args.method, request, args.threads, args.start,
                            args.duration)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
