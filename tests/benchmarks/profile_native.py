"""Where a whole process's CPU goes, over every thread and every library: ``perf`` with DWARF call stacks.

    python tests/benchmarks/profile_native.py -- .venv/bin/prefhouse curate --sources all --data-dir data/bench/raw --lake /tmp/lake --quiet

cProfile sees one Python thread, and py-spy only threads that run Python; curation spends most of its CPU in
native code on threads of its own (polars' pool, Arrow's JSON reader, DuckDB, the Parquet writer). This runs the
command under ``perf record --call-graph dwarf`` and gives each sample to the component its call stack passes
through (:data:`COMPONENTS`: a page fault taken while Arrow parses JSON is the JSON reader's), then prints the
components' shares, the kernel's part of each, and the functions that use the most CPU themselves. A sample is
1/frequency s of one thread's CPU, so the shares are of the CPU time, not of the wall time. Unwinding DWARF stacks
is slow: ``perf script`` takes ~7 minutes over the ~3,000 samples of the 1M-row curation on 2 cores. Needs Linux
``perf`` with ``perf_event_paranoid`` <= 2 (the default lets a user profile their own processes). The machine's
figures: README, Benchmarks.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# (label, pattern over a frame's "symbol (library)"): a sample belongs to the first label whose pattern any frame of its
# stack matches (snappy and rapidjson live in libarrow, but a stack through the Parquet writer or the JSON reader is
# theirs); a stack that matches none is "other"
COMPONENTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern))
    for label, pattern in (
        ("Arrow's JSON reader", r"arrow::json::"),
        ("Parquet writer (pyarrow)", r"\(libparquet|parquet::"),
        ("DuckDB (in curation: the md5 ids)", r"\(_duckdb"),
        ("polars", r"\(_polars_runtime"),
        ("pyarrow: compute, casts, I/O threads", r"\(libarrow"),
        ("numpy", r"\(_multiarray_umath"),
        ("Python interpreter", r"\(libpython"),
    )
)
KERNEL = "[kernel.kallsyms]"


@dataclass
class Sample:
    thread: str
    frames: list[tuple[str, str]]  # (symbol, library file name), leaf first


def parse_perf_script(lines: Iterable[str]) -> Iterator[Sample]:
    """Samples of ``perf script -F comm,tid,ip,sym,dso`` output: a header line per sample, then one line per frame."""
    sample: Sample | None = None
    for line in lines:
        if not line.strip():
            if sample is not None:
                yield sample
            sample = None
        elif not line[0].isspace():
            sample = Sample(line.split()[0], [])
        elif sample is not None:
            m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
            if m:
                sample.frames.append((m.group(1), m.group(2).rsplit("/", 1)[-1]))
    if sample is not None:
        yield sample


def component(sample: Sample) -> str:
    stack = "\n".join(f"{symbol} ({library})" for symbol, library in sample.frames)
    return next((label for label, pattern in COMPONENTS if pattern.search(stack)), "other")


def short(symbol: str) -> str:
    """A demangled C++/Rust symbol without its argument list and generic arguments: ``<str>::trim_matches``,
    ``arrow::rapidjson::GenericReader::ParseStr``."""
    symbol = re.sub(r"\s*\([^()]*\)$", "", symbol)  # a C++ argument list
    before = None
    while before != symbol:  # generic arguments, innermost first: Foo<Bar<u8>>::baz -> Foo::baz
        before = symbol
        symbol = re.sub(r"(?<=[\w\]])(::)?<[^<>]*>", "", symbol)
    symbol = re.sub(r"::<.*>$", "", symbol)  # a trailing turbofish whose arguments are themselves paths
    symbol = re.sub(r"<([^<>]*?) as [^<>]*>", r"<\1>", symbol)  # <T as Trait>::f -> <T>::f
    return re.sub(r"::\{closure#\d+\}", "", symbol)[:100]


@dataclass
class Profile:
    samples: int
    by_component: Counter  # label -> samples
    kernel_by_component: Counter  # label -> samples whose leaf is in the kernel (page faults, scheduling)
    by_thread: Counter
    leaves: Counter  # (function, library) -> samples with it as the leaf


def summarise(samples: Iterable[Sample]) -> Profile:
    p = Profile(0, Counter(), Counter(), Counter(), Counter())
    for s in samples:
        if not s.frames:
            continue
        p.samples += 1
        label = component(s)
        p.by_component[label] += 1
        leaf, library = s.frames[0]
        if library == KERNEL:
            p.kernel_by_component[label] += 1
        p.by_thread[re.sub(r"[-_]?\d+$", "", s.thread)] += 1
        p.leaves[(short(leaf), library)] += 1
    return p


def report(p: Profile, frequency: int, top: int) -> str:
    cpu = p.samples / frequency
    rows = [f"{p.samples} samples at {frequency} Hz = {cpu:.1f} s of CPU over every thread", "",
            f"{'component (its stack passes through)':42} {'CPU s':>7} {'share':>6} {'of it in the kernel':>20}"]
    for label, n in p.by_component.most_common():
        rows.append(f"{label:42} {n / frequency:7.1f} {n / p.samples:6.1%} {p.kernel_by_component[label] / frequency:18.1f} s")
    rows += ["", f"{'thread (as the kernel names it)':42} {'CPU s':>7}"]
    rows += [f"{name:42} {n / frequency:7.1f}" for name, n in p.by_thread.most_common(6)]
    rows += ["", f"top {top} functions by their own CPU (the leaf of the stack)"]
    rows += [f"{n / frequency:6.2f} s {n / p.samples:6.1%}  {name}  [{library}]" for (name, library), n in p.leaves.most_common(top)]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frequency", type=int, default=99, help="samples a second per thread (DWARF stacks are 16 KB each)")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to profile")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to profile after --")
    if shutil.which("perf") is None:
        print("perf is not installed (Debian/Ubuntu: linux-perf or linux-tools)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="prefhouse-perf-") as tmp:
        data = str(Path(tmp) / "perf.data")
        record = ["perf", "record", "-F", str(args.frequency), "--call-graph", "dwarf,16384", "-o", data, "--", *command]
        ran = subprocess.run(record, stdout=subprocess.DEVNULL)
        if ran.returncode:
            print(f"the profiled command (or perf record) exited {ran.returncode}", file=sys.stderr)
            return ran.returncode
        script = subprocess.Popen(["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, errors="replace")
        assert script.stdout is not None
        profile = summarise(parse_perf_script(script.stdout))
        script.wait()
    print(report(profile, args.frequency, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
