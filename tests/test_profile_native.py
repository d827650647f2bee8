"""The native profiler of the benchmarks (tests/benchmarks/profile_native.py): perf's stacks read and attributed right."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("profile_native", Path(__file__).parent / "benchmarks" / "profile_native.py")
profile_native = sys.modules["profile_native"] = importlib.util.module_from_spec(SPEC)  # its dataclasses look themselves up there
SPEC.loader.exec_module(profile_native)

# three samples as `perf script -F comm,tid,ip,sym,dso` prints them (paths shortened), leaf frame first
PERF_SCRIPT = """\
prefhouse  6519 
\t          1f00 arrow::rapidjson::GenericReader<arrow::rapidjson::UTF8<char>, arrow::rapidjson::CrtAllocator>::ParseString<0u> (/venv/pyarrow/libarrow.so.2600)
\t          2f00 arrow::json::Handler<(arrow::json::UnexpectedFieldBehavior)0>::Parse (/venv/pyarrow/libarrow.so.2600)
\t          3f00 start_thread (/usr/lib/libc.so.6)

polars-1  6525 
\t          1c00 clear_page_erms ([kernel.kallsyms])
\t          1c10 exc_page_fault ([kernel.kallsyms])
\t          1c20 __memcpy_avx512_unaligned_erms (inlined)
\t          1c30 <polars_arrow::array::binview::mutable::MutableBinaryViewArray<[u8]>>::push::<&str> (/venv/polars/_polars_runtime.abi3.so)
\t          1c40 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so.1.0)

prefhouse  6530 
\t          1d00 snappy::internal::CompressFragment (/venv/pyarrow/libarrow.so.2600)
\t          1d10 parquet::TypedColumnWriterImpl<parquet::PhysicalType<(parquet::Type::type)6> >::WriteArrowDense(short const*, long) (/venv/pyarrow/libparquet.so.2600)

"""


def test_samples_are_attributed_to_the_component_their_stack_passes_through():
    samples = list(profile_native.parse_perf_script(PERF_SCRIPT.splitlines(keepends=True)))
    assert [len(s.frames) for s in samples] == [3, 5, 2]
    # rapidjson and snappy live in libarrow, but these stacks are the JSON reader's and the Parquet writer's
    assert [profile_native.component(s) for s in samples] == ["Arrow's JSON reader", "polars", "Parquet writer (pyarrow)"]
    p = profile_native.summarise(samples)
    assert p.samples == 3 and p.by_thread == {"prefhouse": 2, "polars": 1}
    assert p.kernel_by_component == {"polars": 1}  # the page fault is counted under polars, and as the kernel's
    assert ("arrow::rapidjson::GenericReader::ParseString", "libarrow.so.2600") in p.leaves
    assert "33.3%" in profile_native.report(p, frequency=100, top=3)


def test_symbols_lose_their_generic_arguments_and_argument_lists():
    short = profile_native.short
    assert short("<polars_arrow::array::binview::mutable::MutableBinaryViewArray<[u8]>>::push::<&str>") == "<polars_arrow::array::binview::mutable::MutableBinaryViewArray>::push"
    assert short("parquet::TypedColumnWriterImpl<parquet::PhysicalType<(parquet::Type::type)6> >::WriteArrowDense(short const*, long)") == "parquet::TypedColumnWriterImpl::WriteArrowDense"
    assert short("<polars_expr::dispatch::strings::function_expr_to_udf::{closure#20} as polars_plan::dsl::ColumnsUdf>::call_udf") == "<polars_expr::dispatch::strings::function_expr_to_udf>::call_udf"
