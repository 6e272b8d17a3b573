"""Host-side verdicts: decode what the child reported and judge it against the hidden answers.

Nothing here trusts the child: its records are parsed defensively (garbage is ignored, a
missing record means the test did not run), values are decoded from a tagged JSON format into
exact builtin types, and the comparison (``TestCase.check`` or token-wise stdout comparison) runs
in this process, where the program cannot reach.
"""

from __future__ import annotations

import builtins
import collections
import functools
import heapq
import itertools
import json
import json.scanner
import math
import re
import string
from collections.abc import Sequence
from typing import Any

from mucode_env.problem import TestCase
from mucode_env.sandbox.results import ExecResult, ProgramRun, Status, TestOutcome
from mucode_env.sandbox.sanitize import sanitize_output

SHOWN_REPR_CHARS = 200
FLOAT_TOLERANCE = 1e-6
_EXIT_STATUS = re.compile(r"exit status (-?\d+)$")  # the zygote's SystemExit record message

_KIND_TO_STATUS = {
    "timeout": Status.TIMEOUT,
    "memory": Status.MEMORY_LIMIT,
    "compile": Status.COMPILE_ERROR,
    "load": Status.RUNTIME_ERROR,
    "error": Status.RUNTIME_ERROR,
    "bad_value": Status.RUNTIME_ERROR,
}

# Modules the trusted check snippets may use without importing them.
_CHECK_GLOBALS = {
    "math": math, "re": re, "collections": collections, "itertools": itertools, "heapq": heapq,
    "functools": functools, "string": string,
}


class DecodeError(ValueError):
    """A value record from the child does not follow the tagged format."""


_SCAN = json.scanner.make_scanner(json.JSONDecoder())


def loads_strict(text: str) -> Any:
    """One JSON value filling ``text`` exactly (no surrounding whitespace), like json.loads.

    Calls json's (C) scanner directly: json.loads adds two regex matches and two Python calls,
    a noticeable share of the host's CPU per execution at seven parses per execution.

    Raises:
        ValueError: ``text`` is not exactly one JSON value.
    """
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        raise ValueError("no JSON value at the start of the text") from None
    if end != len(text):
        raise ValueError(f"extra data after the JSON value (at {end} of {len(text)})")
    return value


def decode_value(obj: Any, depth: int = 0) -> Any:
    """Inverse of the zygote's ``_encode``: tagged JSON -> exact builtin values."""
    if depth > 60:
        raise DecodeError("value too deep")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if type(obj) is int:
        return obj
    if isinstance(obj, list):
        return [decode_value(v, depth + 1) for v in obj]
    if isinstance(obj, dict) and len(obj) == 1:
        (tag, payload), = obj.items()
        if tag == "i":
            return int(payload, 16)
        if tag == "f":
            return float.fromhex(payload)
        if tag == "c":
            return complex(float.fromhex(payload[0]), float.fromhex(payload[1]))
        if tag == "b":
            return bytes.fromhex(payload)
        if tag == "t":
            return tuple(decode_value(v, depth + 1) for v in payload)
        if tag == "s":
            return {decode_value(v, depth + 1) for v in payload}
        if tag == "fs":
            return frozenset(decode_value(v, depth + 1) for v in payload)
        if tag == "d":
            return {decode_value(k, depth + 1): decode_value(v, depth + 1) for k, v in payload}
    raise DecodeError(f"unexpected value encoding {str(obj)[:80]!r}")


def parse_records(text: str) -> dict[int, dict]:
    """Result records keyed by test index (-1: load/compile). Malformed lines are ignored."""
    records: dict[int, dict] = {}
    for line in text.splitlines():
        try:
            record = loads_strict(line)
        except Exception:  # ValueError, and RecursionError for '[[[[...' forged by the program
            continue
        if not isinstance(record, dict) or type(record.get("t")) is not int or not isinstance(record.get("ok"), bool):
            continue
        records[record["t"]] = record  # the last record for a test wins
    return records


def short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # e.g. an int beyond the str-conversion digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= SHOWN_REPR_CHARS else text[: SHOWN_REPR_CHARS - 3] + "..."


@functools.lru_cache(maxsize=8192)
def _compile_check(check: str):
    return compile(check, "<check>", "exec")


def run_check(test: TestCase, values: list[Any]) -> tuple[bool, str]:
    """Run the trusted check on the child's values: (passed, failure message)."""
    namespace: dict[str, Any] = {"__builtins__": builtins, **_CHECK_GLOBALS}
    for i, value in enumerate(values):
        namespace[f"_{i}"] = value
    try:
        exec(_compile_check(test.check), namespace)
    except AssertionError as exc:
        return False, str(exc)
    except Exception as exc:  # a comparison that blows up on the program's value is a wrong answer
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def _float_or_none(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def stdout_matches(got: str, expected: str) -> bool:
    """Token-wise comparison; numeric tokens compare with a 1e-6 relative/absolute tolerance."""
    got_tokens, expected_tokens = got.split(), expected.split()
    if len(got_tokens) != len(expected_tokens):
        return False
    for g, e in zip(got_tokens, expected_tokens):
        if g == e:
            continue
        if "." not in e and "e" not in e.lower():
            return False  # integers and words must match exactly
        gf, ef = _float_or_none(g), _float_or_none(e)
        if gf is None or ef is None or not math.isclose(gf, ef, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE):
            return False
    return True


def _failure_from_record(record: dict) -> TestOutcome:
    kind = record.get("kind")
    status = _KIND_TO_STATUS.get(kind, Status.RUNTIME_ERROR)
    if status is Status.TIMEOUT:
        return TestOutcome(status, message="timed out", duration_ms=_ms(record))
    etype = str(record.get("etype", "Error"))[:100]
    emsg = sanitize_output(str(record.get("emsg", "")))[:300]
    tb = sanitize_output(str(record.get("tb", "")))[-1500:]
    if status is Status.MEMORY_LIMIT:
        return TestOutcome(status, message="MemoryError (memory limit exceeded)", traceback=tb, duration_ms=_ms(record))
    # EPERM only ("[Errno 1]"; a plain substring test also matched "[Errno 13] Permission denied").
    if etype in ("PermissionError", "BlockingIOError") and ("Operation not permitted" in emsg or "[Errno 1]" in emsg):
        emsg += " (creating processes, sockets and system calls outside the program are not allowed)"
    return TestOutcome(status, message=f"{etype}: {emsg}" if emsg else etype, traceback=tb, duration_ms=_ms(record))


def _ms(record: dict) -> float:
    value = record.get("ms", 0.0)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _run_level(run: dict, memory_mb: int, fsize_mb: int, deadline_s: float) -> tuple[Status, str] | None:
    """A status that applies to everything that did not report: kill by deadline, memory, output."""
    if run.get("timed_out"):
        return Status.TIMEOUT, f"Timed out after {deadline_s:g} s (infinite loop or too slow)"
    sig = run.get("signal")
    if sig == 25:  # SIGXFSZ
        return Status.OUTPUT_LIMIT, f"Output limit exceeded (program wrote more than {fsize_mb} MB)"
    if sig == 24:  # SIGXCPU
        return Status.TIMEOUT, "CPU time limit exceeded"
    if sig == 9:
        return Status.MEMORY_LIMIT, f"Killed (memory limit of {memory_mb} MB or resource limit)"
    if sig is not None:
        return Status.RUNTIME_ERROR, f"Process crashed (signal {sig})"
    return None


def judge_call(tests: Sequence[TestCase], run: dict, memory_mb: int, fsize_mb: int, deadline_s: float) -> ExecResult:
    """Verdict of a function-style execution from the zygote's reply."""
    records = parse_records(run.get("records", ""))
    run_level = _run_level(run, memory_mb, fsize_mb, deadline_s)
    output = sanitize_output(run.get("output", ""))
    common = dict(output=output, output_truncated=bool(run.get("output_truncated")),
                  wall_ms=float(run.get("wall_ms", 0.0)), cpu_ms=float(run.get("cpu_ms", 0.0)),
                  run_delay_ms=_run_delay([run]))
    load = records.get(-1)
    if load is not None and not load["ok"]:
        failure = _failure_from_record(load)
        outcomes = tuple(TestOutcome(Status.NOT_RUN, message="program failed to load") for _ in tests)
        return ExecResult(failure.status, outcomes, message=failure.message,
                          extra={"traceback": failure.traceback}, **common)
    outcomes: list[TestOutcome] = []
    for index, test in enumerate(tests):
        record = records.get(index)
        if record is None:
            status, message = run_level or (Status.NOT_RUN, "the program stopped before this test ran")
            outcomes.append(TestOutcome(status, message=message))
            continue
        if not record["ok"]:
            outcomes.append(_failure_from_record(record))
            continue
        try:
            values = decode_value(loads_strict(record.get("v", "")))
            if not isinstance(values, list) or len(values) != len(test.exprs):
                raise DecodeError("wrong number of values")
        except Exception:  # forged records: OverflowError ('0x1p99999'), RecursionError, ...
            outcomes.append(TestOutcome(Status.WRONG_ANSWER, message="malformed result record"))
            continue
        passed, message = run_check(test, values)
        got = short_repr(values[0] if len(values) == 1 else tuple(values))
        outcomes.append(TestOutcome(Status.PASSED if passed else Status.WRONG_ANSWER, got=got,
                                    message=message, duration_ms=_ms(record)))
    return _summarise(tuple(outcomes), run_level, **common)


def judge_stdio(tests: Sequence[TestCase], runs: Sequence[dict], memory_mb: int, fsize_mb: int,
                deadline_s: float, capture_streams: bool = False) -> ExecResult:
    """Verdict of a stdin/stdout execution (one child per test) from the zygote's reply.

    ``capture_streams``: also return every run's raw stdout, stderr and exit status
    (``ExecResult.runs``)."""
    outcomes: list[TestOutcome] = []
    program_runs: list[ProgramRun] = []
    outputs: list[str] = []
    wall = cpu = 0.0
    for test, run in zip(tests, runs):
        wall += float(run.get("wall_ms", 0.0))
        cpu += float(run.get("cpu_ms", 0.0))
        records = parse_records(run.get("records", ""))
        stderr = sanitize_output(run.get("output", ""))
        if stderr:
            outputs.append(stderr)
        record = records.get(-1) or records.get(0)
        got_text = str(run.get("stdout", ""))
        run_level = _run_level(run, memory_mb, fsize_mb, deadline_s)
        if record is not None and not record["ok"]:
            outcomes.append(_failure_from_record(record))
        elif run_level is not None:
            outcomes.append(TestOutcome(run_level[0], message=run_level[1]))
        elif record is None:
            outcomes.append(TestOutcome(Status.RUNTIME_ERROR, message="the program did not finish normally"))
        elif stdout_matches(got_text, test.expected_stdout):
            outcomes.append(TestOutcome(Status.PASSED, got=short_repr(got_text), duration_ms=_ms(record)))
        else:
            outcomes.append(TestOutcome(Status.WRONG_ANSWER, got=short_repr(got_text),
                                        message="wrong output", duration_ms=_ms(record)))
        if capture_streams:
            program_runs.append(program_run(outcomes[-1].status, record, run))
    for _ in range(len(tests) - len(runs)):
        outcomes.append(TestOutcome(Status.NOT_RUN, message="not run"))
    return _summarise(tuple(outcomes), None, output="\n".join(outputs)[-4000:], output_truncated=False,
                      wall_ms=wall, cpu_ms=cpu, run_delay_ms=_run_delay(runs), runs=tuple(program_runs))


def program_run(status: Status, record: dict | None, run: dict) -> ProgramRun:
    """The raw streams of one stdio run and the exit status a ``python`` process would report.

    The child always leaves through ``os._exit(0)`` after reporting, so the status comes from
    its record: 0 (finished), 1 (uncaught exception, syntax error, MemoryError), ``sys.exit``'s
    code; -N after signal N. Without a record the program ended the process itself or silenced
    its report (closing the record's descriptor, then crashing): a non-zero ``os._exit`` code is
    kept, and an exit 0 counts as 1, so that a crash can never pass for a clean exit.
    """
    stderr = str(run.get("output", ""))
    sig = run.get("signal")
    if status is Status.TIMEOUT:
        exit_code: int | None = None
    elif isinstance(sig, int):
        exit_code = -sig
    elif record is None:
        code = run.get("exit_code")
        exit_code = code if isinstance(code, int) and code != 0 else 1
    elif record["ok"]:
        exit_code = 0
    elif record.get("etype") == "SystemExit":
        match = _EXIT_STATUS.search(str(record.get("emsg", "")))
        exit_code = int(match.group(1)) & 0xFF if match else 1  # sys.exit(-1) exits with 255
    else:
        exit_code = 1
        trace = str(record.get("tb", "")) or f"{record.get('etype', 'Error')}: {record.get('emsg', '')}"
        stderr += trace if trace.endswith("\n") else trace + "\n"
    return ProgramRun(status, stdout=str(run.get("stdout", "")), stderr=stderr, exit_code=exit_code,
                      wall_ms=float(run.get("wall_ms", 0.0)))


def _run_delay(runs: Sequence[dict]) -> float | None:
    """Total run-queue wait of the runs, or None when any run lacks it (kernel without schedstat)."""
    delays = [run.get("run_delay_ms") for run in runs]
    if not delays or any(not isinstance(d, (int, float)) or d < 0 for d in delays):
        return None
    return float(sum(delays))


def _summarise(outcomes: tuple[TestOutcome, ...], run_level: tuple[Status, str] | None, **common) -> ExecResult:
    failures = [o for o in outcomes if not o.passed]
    if not failures:
        return ExecResult(Status.PASSED, outcomes, **common)
    # A run-level kill (timeout, output flood) explains the whole run better than NOT_RUN.
    first = failures[0]
    status, message = first.status, first.message
    if run_level is not None and status in (Status.NOT_RUN, run_level[0]):
        status, message = run_level
    return ExecResult(status, outcomes, message=message, **common)
