"""The public API: everything the CLI and the dashboard call (an import contract holds them to it).

Import it where it is needed (``from workbench import api``); it loads torch and the pipeline, so
shells import it inside their commands to keep ``workbench --help`` and the dashboard's start fast.
"""
from __future__ import annotations

from exporters import CAPABILITIES, FORMATS, PRECISIONS, Status, get_format

from .bench.measure import bench_target
from .bench.profiles import PROFILE_DIR, get_profile, load_profiles
from .bench.runners import Protocol, reach_device
from .core import (block_structure, load_model, model_summary, reparameterize, save_state_dict,
                   zoo_table, zoo_table_cached)
from .demo import run_demo
from .errors import ConfigError, WorkbenchError
from .evaluate import evaluate_target
from .executor import Plan, execute
from .export import ExportOptions, export_model
from .fsutil import atomic_write_json
from .graphview import artifact_graph, onnx_op_profile, torch_graph
from .jobs import allocate, cancel, delete_run, list_runs, start, status
from .optimize.pipeline import optimize_model
from .proc import Cancelled, cancel_all
from .optimize.quant import sensitivity_on_data
from .registry import list_models
from .report.build import validate_run
from .report.compare import compare_runs
from .report.render import cells as report_cells
from .report.render import gpu_text, pareto, runtime_text, write_reports
from .studies.before_after import compare_before_after
from .studies.int8_study import quant_study
from .sweep import (check_document, estimate_seconds, load_sweep, run_sweep, safe_name, sweep_to_toml,
                    unsupported_combinations)
from .sweep_fields import check_data_source, check_number
from .train import TrainConfig, train

__all__ = [
    "CAPABILITIES", "FORMATS", "PRECISIONS", "Status", "get_format", "bench_target", "PROFILE_DIR", "get_profile",
    "load_profiles", "Protocol", "reach_device", "block_structure", "load_model", "model_summary", "reparameterize",
    "save_state_dict", "zoo_table", "zoo_table_cached", "run_demo", "ConfigError", "WorkbenchError", "evaluate_target", "Plan",
    "execute", "ExportOptions", "export_model", "atomic_write_json", "artifact_graph", "onnx_op_profile", "torch_graph", "allocate", "cancel", "delete_run", "list_runs", "start", "status",
    "optimize_model", "Cancelled", "cancel_all", "sensitivity_on_data", "list_models", "validate_run", "compare_runs", "report_cells",
    "pareto", "gpu_text", "runtime_text", "write_reports", "compare_before_after", "quant_study", "load_sweep", "check_document", "check_data_source", "check_number", "estimate_seconds", "unsupported_combinations", "run_sweep", "safe_name",
    "sweep_to_toml", "TrainConfig", "train",
]
