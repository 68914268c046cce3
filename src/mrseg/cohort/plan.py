"""What a cohort is run with, kept in ``OUTDIR/cohort.json`` so that a rerun, ``cohort retry`` and
``cohort qc`` use the same model and outputs as the first run.

The plan holds what shapes the outputs (the model and its settings, the outputs asked for) and the
retry budget. How many workers or threads run it is not part of it: a rerun may use another
cluster and still gives the same labels.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.pipeline import ModelSpec, OutputSpec

PLAN_FILE = "cohort.json"
PLAN_VERSION = 1


@dataclass(frozen=True)
class CohortPlan:
    """The model, the outputs and the retry budget of a cohort.

    Attributes:
        model: the model and how to run it (``threads`` is set per run from the cluster; a cohort
            always measures each class's confidence, which quality control reads).
        outputs: which outputs each case writes; a cohort always writes statistics, which quality
            control reads.
        retries: how often a case whose worker died or ran out of memory is tried again.
    """

    model: ModelSpec
    outputs: OutputSpec
    retries: int = 2

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise InputError(f"retries must be 0 or more, got {self.retries}")
        if not self.outputs.statistics:
            object.__setattr__(self, "outputs", replace(self.outputs, statistics=True))
        object.__setattr__(self, "model", replace(self.model, threads=None, confidence=True))

    def to_json(self) -> str:
        model = asdict(self.model)
        model["folder"] = str(self.model.folder)
        outputs = asdict(self.outputs)
        outputs.pop("out_dir")
        return json.dumps({"plan_version": PLAN_VERSION, "model": model, "outputs": outputs,
                           "retries": self.retries}, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, *, out_dir: Path) -> CohortPlan:
        data = json.loads(text)
        model = dict(data["model"])
        model["folder"] = Path(model["folder"])
        if model.get("folds") is not None:
            model["folds"] = tuple(model["folds"])
        outputs = dict(data["outputs"])
        if outputs.get("classes") is not None:
            outputs["classes"] = tuple((str(name), int(value)) for name, value in outputs["classes"])
        known_model = {f.name for f in fields(ModelSpec)}
        known_outputs = {f.name for f in fields(OutputSpec)}
        return cls(ModelSpec(**{k: v for k, v in model.items() if k in known_model}),
                   OutputSpec(out_dir, **{k: v for k, v in outputs.items() if k in known_outputs}),
                   int(data.get("retries", 2)))

    def differences(self, other: CohortPlan) -> list[str]:
        """What ``other`` sets differently, as ``name 'then' then, 'now' now`` phrases (retries may
        change between runs and are not compared)."""
        before, after = json.loads(self.to_json()), json.loads(other.to_json())
        changed = []
        for part in ("model", "outputs"):
            for key in sorted(set(before[part]) | set(after[part])):
                if before[part].get(key) != after[part].get(key):
                    changed.append(f"{key} {before[part].get(key)!r} then, {after[part].get(key)!r} now")
        return changed


def read_plan(out_dir: str | os.PathLike[str]) -> CohortPlan | None:
    """The plan of the cohort in ``out_dir``, or None when it holds none.

    Raises:
        InputError: ``cohort.json`` exists but cannot be read.
    """
    path = Path(out_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return CohortPlan.from_json(path.read_bytes(), out_dir=Path(out_dir))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a readable cohort plan ({err}); restore it, or start the cohort in "
                         "another folder") from err


def write_plan(plan: CohortPlan, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``OUTDIR/cohort.json`` atomically."""
    return write_bytes_atomic(Path(out_dir) / PLAN_FILE, plan.to_json())


def settle_plan(plan: CohortPlan, out_dir: str | os.PathLike[str]) -> CohortPlan:
    """The plan a run in ``out_dir`` uses: ``plan`` for a new cohort (written), the same plan for a
    rerun (with the new retry budget).

    Raises:
        InputError: the folder holds a cohort made with other settings.
    """
    previous = read_plan(out_dir)
    if previous is None:
        write_plan(plan, out_dir)
        return plan
    changed = previous.differences(plan)
    if changed:
        raise InputError(f"{out_dir} holds a cohort run with other settings ({'; '.join(changed[:3])}); rerun it with "
                         "the same options, or start the new cohort in another folder")
    if previous.retries != plan.retries:
        write_plan(plan, out_dir)
    return plan


__all__ = ["PLAN_FILE", "CohortPlan", "read_plan", "settle_plan", "write_plan"]
