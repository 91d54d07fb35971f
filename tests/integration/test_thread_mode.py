"""Thread mode and native extensions: why the segment engine's task holds one Python operator.

In thread mode every embedded Python operator gets its own Python thread state on its task's
thread. PyFlink's ``get_side_output`` chains a Python identity map behind the engine, so the
engine's thread had several, and onnxruntime's module init (``PyGILState_Ensure``) then waited for
the GIL its own thread held: the job hung at open (gdb: ``take_gil`` under
``PyInit_onnxruntime_pybind11_state``, the GIL's holder the same OS thread). The job takes side
outputs on the JVM (``segmentation_job.side_output``) and the engine checks at open that its
thread has one thread state (``functions.check_one_thread_state``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pyflink.common import Configuration, Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext, StreamExecutionEnvironment
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor

from flink_jobs.flink.segmentation_job import side_output

pytestmark = pytest.mark.integration

def _run(take_side_output, out: Path) -> list[str]:
    """A thread-mode job whose keyed function checks its thread and imports onnxruntime at open;
    its side output goes to a Table API sink, as the job's do. The side output's lines."""
    side = OutputTag("side", Types.ROW([Types.STRING()]))  # fresh: a used tag holds a py4j object

    class Checked(KeyedProcessFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            from flink_jobs.flink.functions import check_one_thread_state

            check_one_thread_state()
            import onnxruntime  # noqa: F401  (hangs here without the check, when the thread has two states)

        def process_element(self, value, ctx):
            yield side, Row(value[0])
            yield Row(value[0])

    # Thread mode finds libpython through `python` on PATH (see segmentation_job.create_environment).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("python.executable", sys.executable)
    conf.set_string("restart-strategy.type", "none")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    rows = env.from_collection([Row("a"), Row("b")], type_info=Types.ROW([Types.STRING()]))
    main = rows.key_by(lambda r: r[0], key_type=Types.STRING()).process(Checked(), output_type=Types.ROW([Types.STRING()]))
    t_env = StreamTableEnvironment.create(env)
    schema = Schema.new_builder().column("f0", DataTypes.STRING()).build()
    sink = TableDescriptor.for_connector("filesystem").schema(schema).option("path", str(out)).format("csv").build()
    t_env.create_temporary_table("side_sink", sink)
    statements = t_env.create_statement_set()
    statements.add_insert("side_sink", t_env.from_data_stream(take_side_output(main, side)))
    statements.attach_as_datastream()
    env.execute("thread-mode side output")
    return sorted(line for f in out.rglob("*") if f.is_file() and not f.name.startswith(".") for line in f.read_text().split())


def test_side_outputs_taken_on_the_jvm_leave_one_thread_state_and_onnxruntime_loads(tmp_path: Path):
    assert _run(side_output, tmp_path / "out") == ["a", "b"]


def test_a_python_operator_chained_behind_the_engine_fails_at_open_naming_the_cause(tmp_path: Path):
    with pytest.raises(Exception, match="second Python thread state"):
        _run(lambda main, tag: main.get_side_output(tag), tmp_path / "out")
