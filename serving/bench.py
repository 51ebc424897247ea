"""Load generator for the served model, and the in-process ONNX Runtime baseline measured in the same run.

Closed loop: `concurrency` clients each keep exactly one batch-1 pixel request in flight (asyncio on
tritonclient's gRPC or HTTP aio client), so the server's dynamic batcher sees `concurrency` requests at once.
For each concurrency: images/s answered (goodput) and p50/p95/p99 latency over the measured window, after a
warm-up, and Triton's own statistics for the same window (mean batch, queue, compute and in-Triton time per
request). Past capacity the server refuses what it cannot queue (UNAVAILABLE); a client so refused backs
off as TritonClassifier does (full-jitter exponential, from 0.1 s up to 2 s) and sends again, and the
refusals are counted with their own latency: how fast a client learns that it must wait.

    report = run_benchmark("127.0.0.1:8001", concurrencies=[1, 16, 64], duration=10,
                           compare_repository=Path("model_repository"))
    print(format_report(report))

Figures on a shared machine are noisy: compare the served and in-process numbers of one run (the ratios),
not numbers from different runs.
"""

from __future__ import annotations

import asyncio
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.machine import load_average, usable_cpu_count
from common.timing import timed_loop
from serving.client import OVERLOAD_MESSAGES, PIXELS, PROBABILITIES, RetryPolicy, TritonClassifier
from serving.errors import ServingError
from triton_repository.layout import ONNX_FILE, newest_file

INPROCESS_BATCHES = (1, 64)


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        if not seconds:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"))
        ms = np.asarray(seconds) * 1000.0
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return cls(float(p50), float(p95), float(p99), float(ms.mean()))


@dataclass(frozen=True)
class ServerSide:
    """Triton's own statistics over a measured window, per request (what perf_analyzer calls the server side).

    queue_ms: waiting for the dynamic batcher; compute_ms: the model's input, execute and output phases
    (a request counts its whole batch's run); in_triton_ms: arrival to response sent. The client's mean
    latency minus in_triton_ms is what happens outside Triton: the client library, gRPC/HTTP and the OS.
    """

    requests: int
    mean_batch_size: float
    queue_ms: float
    compute_ms: float
    in_triton_ms: float

    @classmethod
    def between(cls, before: dict[str, int], after: dict[str, int]) -> ServerSide | None:
        delta = {name: after[name] - before[name] for name in after}
        requests = delta["success_count"]
        if requests <= 0 or delta["executions"] <= 0:
            return None

        def per_request_ms(*phases: str) -> float:
            return sum(delta[f"{phase}_ns"] for phase in phases) / requests / 1e6

        return cls(
            requests=requests,
            mean_batch_size=delta["inferences"] / delta["executions"],
            queue_ms=per_request_ms("queue"),
            compute_ms=per_request_ms("compute_input", "compute_infer", "compute_output"),
            in_triton_ms=per_request_ms("success"),
        )


@dataclass(frozen=True)
class ServedResult:
    concurrency: int
    requests: int  # answered inside the window
    errors: int  # failed for another reason than a refusal (unreachable, timed out, rejected)
    seconds: float
    images_per_second: float  # answered images per second: the goodput
    latency: Latency
    server: ServerSide | None = None  # None where the statistics endpoint did not answer
    refused: int = 0  # refused as overloaded (UNAVAILABLE: a full queue, or too long in it)
    refused_latency: Latency | None = None  # how long a refusal took to arrive


@dataclass(frozen=True)
class InProcessResult:
    batch_size: int
    runs: int
    seconds: float
    images_per_second: float
    latency: Latency


@dataclass
class BenchReport:
    url: str
    protocol: str
    model: str
    image_size: int
    duration_s: float
    machine: dict
    rounds: int = 1
    served: list[ServedResult] = field(default_factory=list)
    inprocess: list[InProcessResult] = field(default_factory=list)
    inprocess_engine: str = ""  # the provider that ran the baseline (read back) and its precision
    ratios: dict = field(default_factory=dict)  # medians of the per-round ratios
    ratios_per_round: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def machine_facts() -> dict:
    return {
        "cpu_cores": usable_cpu_count(),
        "load_average_1m_at_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# -- served ------------------------------------------------------------------------------------------------


def _aio_module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc.aio as module
    elif protocol == "http":
        import tritonclient.http.aio as module
    else:
        raise ServingError(f"unknown protocol {protocol!r}: use grpc or http")
    return module


async def _closed_loop(
    url: str, protocol: str, model: str, pixels: np.ndarray, concurrency: int, warmup: float, duration: float
) -> ServedResult:
    module = _aio_module(protocol)
    client = (
        module.InferenceServerClient(url)
        if protocol == "grpc"
        else module.InferenceServerClient(url, conn_limit=concurrency + 1)  # one for the statistics
    )
    latencies: list[float] = []
    refusals: list[float] = []
    errors = 0
    started = time.perf_counter()
    window_start, window_end = started + warmup, started + warmup + duration
    policy = RetryPolicy()

    def request_parts():
        infer_input = module.InferInput(PIXELS, list(pixels.shape), "UINT8")
        infer_input.set_data_from_numpy(pixels)
        return [infer_input], [module.InferRequestedOutput(PROBABILITIES)]

    async def one_client() -> None:
        nonlocal errors
        inputs, outputs = request_parts()
        refused_in_a_row = 0
        while True:
            sent = time.perf_counter()
            if sent >= window_end:
                return  # the requests still in flight at the end finish after the window and do not count
            try:
                await client.infer(model, inputs, outputs=outputs)
                outcome = "answered"
            except Exception as error:  # counted, not raised: one failed request must not end the measurement
                outcome = "refused" if _is_refusal(error) else "failed"
            done = time.perf_counter()
            if window_start <= done <= window_end:  # throughput counts completions in the window
                if outcome == "answered":
                    latencies.append(done - sent)
                elif outcome == "refused":
                    refusals.append(done - sent)
                else:
                    errors += 1
            if outcome == "answered":
                refused_in_a_row = 0
            else:  # back off as TritonClassifier does, rather than hammer an overloaded server
                refused_in_a_row += 1
                await asyncio.sleep(_backoff(policy, refused_in_a_row))

    async def statistics_at(moment: float) -> dict[str, int] | None:
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        return await _model_statistics(client, protocol, model)

    try:
        clients = (one_client() for _ in range(concurrency))
        before, after, *_ = await asyncio.gather(
            statistics_at(window_start), statistics_at(window_end), *clients
        )
    finally:
        await client.close()
    return ServedResult(
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=duration,
        images_per_second=len(latencies) * pixels.shape[0] / duration,
        latency=Latency.of(latencies),
        server=ServerSide.between(before, after) if before and after else None,
        refused=len(refusals),
        refused_latency=Latency.of(refusals) if refusals else None,
    )


def _is_refusal(error: Exception) -> bool:
    """Triton shedding load: UNAVAILABLE (gRPC) or 503 (HTTP), the queue full or the wait too long."""
    message = str(error)
    return any(text in message for text in OVERLOAD_MESSAGES)


def _backoff(policy: RetryPolicy, attempt: int) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, initial * 2^(attempt-1))]."""
    ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)


STATISTICS_PHASES = ("success", "queue", "compute_input", "compute_infer", "compute_output")


async def _model_statistics(client, protocol: str, model: str) -> dict[str, int] | None:
    """Triton's cumulative counters for `model`, or None where the statistics endpoint does not answer."""
    try:
        if protocol == "grpc":
            raw = await client.get_inference_statistics(model, as_json=True)
        else:
            raw = await client.get_inference_statistics(model)
    except Exception:  # the figures are extra: a server that restricts statistics still gets benchmarked
        return None
    counters = dict.fromkeys(["inferences", "executions", "success_count"], 0)
    counters |= {f"{phase}_ns": 0 for phase in STATISTICS_PHASES}
    for stats in raw.get("model_stats", []):  # one entry per loaded version; protobuf JSON omits zeros
        phases = stats.get("inference_stats", {})
        # Batches from the per-size table, not inference_count/execution_count: Triton updates those two at
        # different moments, so a snapshot between them could show more executions than inferences.
        for batch in stats.get("batch_stats", []):
            executions = int(batch.get("compute_infer", {}).get("count", 0))
            counters["executions"] += executions
            counters["inferences"] += int(batch.get("batch_size", 0)) * executions
        counters["success_count"] += int(phases.get("success", {}).get("count", 0))
        for phase in STATISTICS_PHASES:
            counters[f"{phase}_ns"] += int(phases.get(phase, {}).get("ns", 0))
    return counters


def measure_served(
    url: str,
    *,
    protocol: str = "grpc",
    model: str = "alexnet",
    concurrency: int,
    duration: float,
    warmup: float = 2.0,
    image_size: int | None = None,
) -> ServedResult:
    """Closed-loop batch-1 pixel requests at `concurrency`; requests completed inside the window count."""
    if image_size is None:
        image_size = TritonClassifier(url, protocol=protocol, model=model).model_info().image_size
    pixels = np.random.default_rng(0).integers(0, 256, (1, image_size, image_size, 3), dtype=np.uint8)
    return asyncio.run(_closed_loop(url, protocol, model, pixels, concurrency, warmup, duration))


# -- in-process --------------------------------------------------------------------------------------------


def served_onnx_file(repository: Path, model: str) -> Path:
    """The ONNX file the server runs for `model`: the newest version folder's model.onnx."""
    onnx_file = newest_file(Path(repository) / model, ONNX_FILE)
    if onnx_file is None:
        raise ServingError(
            f"no {model}/<version>/model.onnx in {repository}: pass the repository the server runs "
            "(`alexnet export onnx --repository ...`)"
        )
    return onnx_file


def measure_inprocess(
    session, *, batch_size: int, image_size: int, duration: float, input_name: str = PIXELS
) -> InProcessResult:
    """Run one batch size back to back for `duration` seconds (after one untimed run)."""
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8)
    latencies = timed_loop(lambda: session.run(None, {input_name: batch}), duration).latencies
    elapsed = sum(latencies)
    return InProcessResult(
        batch_size=batch_size,
        runs=len(latencies),
        seconds=elapsed,
        images_per_second=batch_size * len(latencies) / elapsed,
        latency=Latency.of(latencies),
    )


def inprocess_session(onnx_file: Path, *, fp16: bool = False):
    """ONNX Runtime as the local server's substitute model runs it: same factory, threads and no spinning,
    and FP16 TensorRT kernels where the served model's config asks for them (`served_fp16`)."""
    from common.machine import usable_cpu_count
    from common.onnx_session import create_session

    return create_session(
        onnx_file, device="auto", threads=usable_cpu_count(), allow_spinning=False, fp16=fp16
    )


def served_fp16(repository: Path, model: str) -> bool:
    """Whether the served model runs FP16 (its config's TensorRT precision), as the server decides it."""
    from triton_repository.configs import read_config, wants_fp16

    return wants_fp16(read_config(Path(repository) / model))


# -- the whole run -----------------------------------------------------------------------------------------


def run_benchmark(
    url: str,
    *,
    protocol: str = "grpc",
    model: str = "alexnet",
    concurrencies: list[int],
    duration: float,
    warmup: float = 2.0,
    compare_repository: Path | None = None,
    inprocess_batches: tuple[int, ...] = INPROCESS_BATCHES,
    rounds: int = 1,
    progress=print,
) -> BenchReport:
    """Concurrency sweep against the server, optionally the in-process baseline, and their ratios.

    Each in-process batch size is timed right after the served point it is compared with (batch 1
    after concurrency 1, the largest batch after the highest concurrency), so both see the same load.
    With rounds > 1 all of it repeats; each point reports the median of its rounds and each ratio the
    median of the per-round ratios: on a shared machine the load drifts from minute to minute.
    """
    classifier = TritonClassifier(url, protocol=protocol, model=model)
    try:
        classifier.wait_until_ready(timeout=30)
        info = classifier.model_info()
    finally:
        classifier.close()
    report = BenchReport(url, protocol, model, info.image_size, duration, machine_facts(), rounds=rounds)
    session = input_name = None
    if compare_repository is not None:
        onnx_file = served_onnx_file(compare_repository, model)
        fp16 = served_fp16(compare_repository, model)
        session = inprocess_session(onnx_file, fp16=fp16)
        input_name = session.get_inputs()[0].name
        report.inprocess_engine = f"ONNX Runtime {session.get_providers()[0]}" + (
            ", FP16 allowed" if fp16 else ", FP32"
        )
        progress(f"in-process baseline: {report.inprocess_engine}")
    partners = baseline_partners(concurrencies, inprocess_batches if session is not None else ())
    served_runs: dict[int, list[ServedResult]] = {c: [] for c in concurrencies}
    inprocess_runs: dict[int, list[InProcessResult]] = {b: [] for b in inprocess_batches}
    for round_index in range(rounds):
        prefix = f"[{round_index + 1}/{rounds}] " if rounds > 1 else ""
        for concurrency in [*concurrencies, None]:
            if concurrency is not None:
                result = measure_served(
                    url,
                    protocol=protocol,
                    model=model,
                    concurrency=concurrency,
                    duration=duration,
                    warmup=warmup,
                    image_size=info.image_size,
                )
                errors = f"  errors {result.errors}" if result.errors else ""
                if result.refused_latency is not None:
                    refusal_p99 = result.refused_latency.p99_ms
                    errors += f"  refused {result.refused} (p99 {refusal_p99:.1f} ms to the refusal)"
                progress(f"{prefix}served     c={concurrency:<4} {_describe(result)}{errors}")
                served_runs[concurrency].append(result)
            for batch_size in partners.get(concurrency, []):
                result = measure_inprocess(
                    session,
                    batch_size=batch_size,
                    image_size=info.image_size,
                    duration=duration,
                    input_name=input_name,
                )
                progress(f"{prefix}in-process b={batch_size:<4} {_describe(result)}")
                inprocess_runs[batch_size].append(result)
        per_round = BenchReport(url, protocol, model, info.image_size, duration, report.machine)
        per_round.served = [runs[-1] for runs in served_runs.values()]
        per_round.inprocess = [runs[-1] for runs in inprocess_runs.values() if runs]
        report.ratios_per_round.append(compare(per_round))
    report.served = [_median_served(runs) for runs in served_runs.values()]
    report.inprocess = [_median_inprocess(runs) for runs in inprocess_runs.values() if runs]
    report.machine["load_average_1m_at_end"] = load_average()
    report.ratios = {
        name: round(float(np.median([ratios[name] for ratios in report.ratios_per_round])), 3)
        for name in report.ratios_per_round[0]
    }
    return report


def baseline_partners(concurrencies: list[int], batches: tuple[int, ...]) -> dict[int | None, list[int]]:
    """Which in-process batch sizes to time right after which concurrency (None: after the sweep)."""
    partners: dict[int | None, list[int]] = {}
    for batch_size in batches:
        if batch_size == 1 and 1 in concurrencies:
            partner = 1
        elif batch_size == max(batches):
            partner = max(concurrencies)
        else:
            partner = None
        partners.setdefault(partner, []).append(batch_size)
    return partners


def _medians(items: list, names: tuple[str, ...]) -> dict[str, float]:
    """For each named field, its median over `items` (rounds of the same measurement)."""
    return {name: float(np.median([getattr(item, name) for item in items])) for name in names}


def _median_latency(latencies: list[Latency]) -> Latency:
    return Latency(**_medians(latencies, ("p50_ms", "p95_ms", "p99_ms", "mean_ms")))


def _median_server_side(sides: list[ServerSide | None]) -> ServerSide | None:
    measured = [side for side in sides if side is not None]
    if not measured:
        return None
    return ServerSide(
        requests=sum(side.requests for side in measured),
        **_medians(measured, ("mean_batch_size", "queue_ms", "compute_ms", "in_triton_ms")),
    )


def _median_served(runs: list[ServedResult]) -> ServedResult:
    if len(runs) == 1:
        return runs[0]
    refused = [run.refused_latency for run in runs if run.refused_latency is not None]
    return ServedResult(
        concurrency=runs[0].concurrency,
        requests=sum(run.requests for run in runs),
        errors=sum(run.errors for run in runs),
        seconds=sum(run.seconds for run in runs),
        images_per_second=float(np.median([run.images_per_second for run in runs])),
        latency=_median_latency([run.latency for run in runs]),
        server=_median_server_side([run.server for run in runs]),
        refused=sum(run.refused for run in runs),
        refused_latency=_median_latency(refused) if refused else None,
    )


def _median_inprocess(runs: list[InProcessResult]) -> InProcessResult:
    if len(runs) == 1:
        return runs[0]
    return InProcessResult(
        batch_size=runs[0].batch_size,
        runs=sum(run.runs for run in runs),
        seconds=sum(run.seconds for run in runs),
        images_per_second=float(np.median([run.images_per_second for run in runs])),
        latency=_median_latency([run.latency for run in runs]),
    )


def _describe(result: ServedResult | InProcessResult) -> str:
    latency = result.latency
    return (
        f"{result.images_per_second:8.1f} images/s   p50 {latency.p50_ms:7.1f} ms   "
        f"p95 {latency.p95_ms:7.1f} ms   p99 {latency.p99_ms:7.1f} ms"
    )


def compare(report: BenchReport) -> dict:
    """Served c=max vs in-process b=max throughput; served c=1 p99 vs in-process b=1 median; and, past
    capacity, the goodput at the highest concurrency vs the next one down (c=700 vs c=64, say)."""
    served = {result.concurrency: result for result in report.served}
    inprocess = {result.batch_size: result for result in report.inprocess}
    ratios: dict = {}
    levels = sorted(served)
    if len(levels) >= 2 and levels[-2] > 1:
        top, below = served[levels[-1]], served[levels[-2]]
        ratios[f"served_c{top.concurrency}_vs_c{below.concurrency}_goodput"] = round(
            top.images_per_second / below.images_per_second, 3
        )
    if served and inprocess:
        top_c, top_b = max(served), max(inprocess)
        ratios[f"served_c{top_c}_vs_inprocess_b{top_b}_throughput"] = round(
            served[top_c].images_per_second / inprocess[top_b].images_per_second, 3
        )
        if 1 in served and 1 in inprocess:
            ratios["served_c1_p99_vs_inprocess_b1_median_latency"] = round(
                served[1].latency.p99_ms / inprocess[1].latency.p50_ms, 3
            )
    return ratios


def format_report(report: BenchReport) -> str:
    lines = [
        f"{report.model} over {report.protocol} at {report.url}, batch-1 pixel requests "
        f"({report.image_size}x{report.image_size}), {report.duration_s:g}s per point"
        f"{f' x {report.rounds} rounds (medians)' if report.rounds > 1 else ''}, "
        f"{report.machine['cpu_cores']} cores, load {report.machine['load_average_1m_at_start']} at start"
    ]
    lines.append(f"{'':12}{'images/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for result in report.served:
        lines.append(_row(f"served c={result.concurrency}", result.images_per_second, result.latency))
        if result.refused_latency is not None:
            lines.append(_row("  refused", result.refused / result.seconds, result.refused_latency))
        if result.errors:
            lines.append(f"  {result.errors} requests failed (unreachable, timed out or rejected)")
    for result in report.inprocess:
        lines.append(_row(f"in-proc b={result.batch_size}", result.images_per_second, result.latency))
    lines.extend(_server_side_lines(report.served))
    for name, value in report.ratios.items():
        rounds = ", ".join(f"{ratios[name]:.3f}" for ratios in report.ratios_per_round)
        lines.append(f"{name}: {value:.3f}" + (f" (median of rounds {rounds})" if report.rounds > 1 else ""))
    if report.machine.get("load_average_1m_at_end") is not None:
        lines.append(f"load average (1 min) at the end: {report.machine['load_average_1m_at_end']}")
    return "\n".join(lines)


def _server_side_lines(served: list[ServedResult]) -> list[str]:
    """Triton's statistics for the same windows: where a served request's time went."""
    measured = [result for result in served if result.server is not None]
    if not measured:
        return []
    lines = [
        "Triton's statistics, same windows (ms per request; outside = client mean - in Triton):",
        f"{'':12}{'batch':>10}{'queue':>10}{'compute':>10}{'in Triton':>10}{'outside':>10}",
    ]
    for result in measured:
        side = result.server
        outside = result.latency.mean_ms - side.in_triton_ms
        lines.append(
            f"{f'served c={result.concurrency}':<12}{side.mean_batch_size:>10.1f}{side.queue_ms:>10.2f}"
            f"{side.compute_ms:>10.2f}{side.in_triton_ms:>10.2f}{outside:>10.2f}"
        )
    return lines


def _row(name: str, images_per_second: float, latency: Latency) -> str:
    return (
        f"{name:<12}{images_per_second:>10.1f}{latency.p50_ms:>10.1f}{latency.p95_ms:>10.1f}"
        f"{latency.p99_ms:>10.1f}"
    )


# -- soak ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakReport:
    """A fixed number of batch-1 requests at a concurrency: failures, throughput and the server's memory
    (resident set of tritonserver and its worker processes) after the warm-up and at the end."""

    url: str
    protocol: str
    model: str
    concurrency: int
    requests: int
    failures: int
    seconds: float
    latency: Latency
    memory_start_mb: float | None
    memory_end_mb: float | None
    machine: dict

    @property
    def memory_drift(self) -> float | None:
        if not self.memory_start_mb or self.memory_end_mb is None:
            return None
        return (self.memory_end_mb - self.memory_start_mb) / self.memory_start_mb

    def to_json(self) -> dict:
        return asdict(self) | {"memory_drift": self.memory_drift}


def server_memory_mb(pid: int) -> float:
    """Resident memory of process `pid` and its children (Triton's Python-backend stubs), in MB."""
    from serving.processes import child_processes

    total_kb = 0
    for process in (pid, *child_processes(pid)):
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except OSError:  # exited meanwhile
            continue
        total_kb += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    if total_kb == 0:
        raise ServingError(f"no process {pid} to measure: pass the tritonserver pid (`pgrep tritonserver`)")
    return total_kb / 1024


async def _soak_loop(
    url: str, protocol: str, model: str, pixels: np.ndarray, concurrency: int, total: int, timeout: float
) -> tuple[list[float], int]:
    module = _aio_module(protocol)
    client = module.InferenceServerClient(url)
    latencies: list[float] = []
    failures = 0
    remaining = total

    async def one_client() -> None:
        nonlocal failures, remaining
        infer_input = module.InferInput(PIXELS, list(pixels.shape), "UINT8")
        infer_input.set_data_from_numpy(pixels)
        outputs = [module.InferRequestedOutput(PROBABILITIES)]
        timeout_argument = {"client_timeout": timeout} if protocol == "grpc" else {"timeout": int(timeout)}
        while remaining > 0:
            remaining -= 1
            sent = time.perf_counter()
            try:
                await client.infer(model, [infer_input], outputs=outputs, **timeout_argument)
                latencies.append(time.perf_counter() - sent)
            except Exception:  # counted: the soak reports every failure instead of stopping at the first
                failures += 1

    try:
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    finally:
        await client.close()
    return latencies, failures


def run_soak(
    url: str,
    *,
    protocol: str = "grpc",
    model: str = "alexnet",
    requests: int = 10_000,
    concurrency: int = 64,
    server_pid: int | None = None,
    warmup_requests: int = 1_000,
    timeout: float = 30.0,
    progress=print,
) -> SoakReport:
    """`requests` batch-1 requests at `concurrency` after `warmup_requests` (so memory is compared once the
    server's pools and batches have reached their working size); memory needs the server's pid."""
    classifier = TritonClassifier(url, protocol=protocol, model=model)
    try:
        classifier.wait_until_ready(timeout=30)
        image_size = classifier.model_info().image_size
    finally:
        classifier.close()
    pixels = np.random.default_rng(0).integers(0, 256, (1, image_size, image_size, 3), dtype=np.uint8)
    machine = machine_facts()
    asyncio.run(_soak_loop(url, protocol, model, pixels, concurrency, warmup_requests, timeout))
    start_mb = server_memory_mb(server_pid) if server_pid else None
    progress(
        f"soak: {requests} requests at concurrency {concurrency} after {warmup_requests} warm-up requests"
    )
    started = time.perf_counter()
    latencies, failures = asyncio.run(
        _soak_loop(url, protocol, model, pixels, concurrency, requests, timeout)
    )
    seconds = time.perf_counter() - started
    end_mb = server_memory_mb(server_pid) if server_pid else None
    return SoakReport(
        url,
        protocol,
        model,
        concurrency,
        requests,
        failures,
        seconds,
        Latency.of(latencies),
        start_mb,
        end_mb,
        machine,
    )


def format_soak(report: SoakReport) -> str:
    latency = report.latency
    lines = [
        f"soak: {report.model} over {report.protocol} at {report.url}: {report.requests} requests at "
        f"concurrency {report.concurrency} in {report.seconds:.1f} s "
        f"({report.requests / report.seconds:.1f} requests/s), {report.failures} failed",
        f"latency p50 {latency.p50_ms:.1f} ms  p95 {latency.p95_ms:.1f} ms  p99 {latency.p99_ms:.1f} ms",
    ]
    if report.memory_drift is None:
        lines.append("server memory: not measured (pass --server-pid, the tritonserver pid)")
    else:
        lines.append(
            f"server memory (tritonserver + stubs, resident): {report.memory_start_mb:.0f} MB after the "
            f"warm-up, {report.memory_end_mb:.0f} MB at the end ({report.memory_drift:+.1%})"
        )
    lines.append(
        f"{report.machine['cpu_cores']} cores, load {report.machine['load_average_1m_at_start']} at start"
    )
    return "\n".join(lines)
