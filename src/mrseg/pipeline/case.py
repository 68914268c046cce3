"""One case, end to end: read → label → write every output → commit them together with a record.

:func:`process_case` is what ``mrseg segment``, :func:`mrseg.segment`-style batches, ``mrseg demo``
and the cohort and annotation commands call for each input. Under the case's lock it

1. finishes or removes what a stopped run left in the case's staging folder;
2. decides from the case record what is missing: nothing (``skipped``), only outputs that can be
   made from the existing label map (``completed``), or everything (``segmented``);
3. reads the input once, runs the labeller (a model, or several models' maps combined) only when
   the labels are not already on disk, and writes each missing output into staging;
4. commits: outputs first, the record last (:mod:`mrseg.pipeline.staging`).

A bad input or a full disk fails this case only: the outcome says why, nothing of it is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from mrseg.errors import InputError, MrsegError
from mrseg.inference.segmenter import Segmentation
from mrseg.io.dicom import DicomSeries, select_series
from mrseg.io.dicom_seg import write_dicom_seg
from mrseg.io.files import read_image, read_series, write_bytes_atomic, write_image
from mrseg.io.image import Image
from mrseg.io.locks import FileLock, LockOwner
from mrseg.io.paths import LABEL_MAP_DESCRIPTION
from mrseg.pipeline.cases import CaseSpec
from mrseg.pipeline.outputs import OutputSpec
from mrseg.pipeline.staging import commit, new_staging, recover, remove_empty_work_folder
from mrseg.postprocess import combine_label_maps, select_classes, write_class_masks
from mrseg.report.preview import write_preview
from mrseg.report.records import CaseRecord, OutputFile, now, read_case_record, software_versions
from mrseg.report.statistics import class_statistics, write_statistics

log = logging.getLogger(__name__)

StageCallback = Callable[[CaseSpec, str], None]
TileCallback = Callable[[int, int], None]

STAGE_OF_OUTPUT = {"labels": "write", "dicom_seg": "dicom_seg", "masks": "masks", "statistics_json": "statistics",
                   "statistics_csv": "statistics", "preview": "preview"}


class Labeller(Protocol):
    """What makes a case's labels: a loaded model (:class:`~mrseg.pipeline.models.LoadedModel`) or
    several models' maps combined (:class:`CombinedLabels`)."""

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def classes(self) -> dict[str, int]: ...

    @property
    def title(self) -> str: ...

    def label(self, image: Image, *, source: str, on_tile: TileCallback | None) -> Segmentation: ...


class CaseBusy(MrsegError):
    """Another live process holds the case's lock."""

    def __init__(self, case: CaseSpec, owner: LockOwner | None) -> None:
        who = owner.describe() if owner else "another process"
        super().__init__(f"{case.path}: being segmented by {who}")
        self.owner = owner


@dataclass(frozen=True, eq=False)
class CaseOutcome:
    """What :func:`process_case` did: the record, and the label map when ``keep_labels`` asked for it.

    ``transient`` marks a failure of the machine rather than of the input (out of memory): the same
    case may well succeed on another try or another worker.
    """

    record: CaseRecord
    labels: Image | None = None
    transient: bool = False


class CombinedLabels:
    """Several models' label maps of one case as one map (base 1–40, the next model's classes after
    them; the earlier model wins where two label a voxel), combined in memory."""

    def __init__(self, parts: Sequence[Image], classes: Mapping[str, int], offsets: Sequence[int],
                 settings: Sequence[Mapping[str, Any]]) -> None:
        self._parts = list(parts)
        self._classes = dict(classes)
        self._offsets = list(offsets)
        self._settings = {"combined": [dict(s) for s in settings], "offsets": list(offsets)}

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._settings

    @property
    def classes(self) -> dict[str, int]:
        return self._classes

    @property
    def title(self) -> str:
        return "combined"

    def label(self, image: Image, *, source: str, on_tile: TileCallback | None) -> Segmentation:
        clock = time.perf_counter()
        combined = combine_label_maps(self._parts, self._offsets)
        return Segmentation(labels=combined, timings={"combine": time.perf_counter() - clock})


def process_case(
    case: CaseSpec,
    labeller: Labeller,
    outputs: OutputSpec,
    *,
    keep_labels: bool = False,
    wait: bool = False,
    on_stage: StageCallback | None = None,
    on_tile: TileCallback | None = None,
) -> CaseOutcome:
    """Make every output ``outputs`` asks for of ``case``, or nothing; see the module docstring.

    Args:
        case: the input.
        labeller: what makes the labels (a loaded model).
        outputs: which outputs, where.
        keep_labels: also return the label map (made, or read back when the case was done).
        wait: when another process holds the case, wait for it instead of raising :class:`CaseBusy`.
        on_stage: called with each stage's name (read, segment, write, statistics, ..., commit).
        on_tile: called after each sliding-window tile with (done, total).

    Returns:
        The outcome; ``outcome.record.status`` is ``segmented``, ``completed``, ``skipped`` or ``failed``.

    Raises:
        CaseBusy: another live process holds the case and ``wait`` is False.
    """
    lock = FileLock(outputs.lock_path(case.name))
    while not lock.acquire():
        if not wait:
            raise CaseBusy(case, lock.owner())
        time.sleep(0.5)
    try:
        return _locked(case, labeller, outputs, keep_labels, on_stage, on_tile)
    finally:
        lock.release()
        remove_empty_work_folder(outputs.work_dir)


def _locked(case: CaseSpec, labeller: Labeller, outputs: OutputSpec, keep_labels: bool,
            on_stage: StageCallback | None, on_tile: TileCallback | None) -> CaseOutcome:
    record_path = outputs.record_path(case.name)
    staging = outputs.staging_dir(case.name)
    paths = outputs.paths(case.name)
    recover(staging, outputs.out_dir, record_path.name)
    wanted = outputs.wanted(dicom_input=case.is_dicom)
    try:
        settings = {**labeller.settings, "classes": dict(outputs.classes) if outputs.classes else None,
                    "series": case.series, "channel": case.channel, "input": _input_identity(case)}
    except OSError as err:
        return failed_outcome(case, f"{case.path}: cannot read ({err.strerror or err}); check the path")
    previous = read_case_record(record_path)
    reuse: dict[str, OutputFile] = {}
    if not outputs.overwrite and previous is not None:
        if _comparable(previous.settings) != _comparable(settings):
            changed = ", ".join(_differences(previous.settings, settings))
            return failed_outcome(case, (
                f"{case.path}: its outputs in {outputs.out_dir} were made with other settings ({changed}); add "
                "--overwrite to replace them, or choose another -o"))
        reuse = {k: v for k, v in previous.outputs.items() if _present(outputs.out_dir, v)}
        missing = [k for k in wanted if k not in reuse and k not in previous.left_out]
        if not missing:
            labels = _read_labels(paths["labels"]) if keep_labels and "labels" in reuse else None
            return CaseOutcome(replace(previous, status="skipped", timings={}), labels)
    elif not outputs.overwrite:
        existing = [paths[k] for k in wanted if paths[k].exists()]
        if existing:
            labels = _read_labels(paths["labels"]) if keep_labels and paths["labels"].is_file() else None
            return CaseOutcome(_record(case, "skipped", settings, {}, {}, error=(
                f"{existing[0]} exists without a case record (made by another tool or an older mrseg); "
                "--overwrite replaces it")), labels)

    timings: dict[str, float] = {}
    try:
        _stage(on_stage, case, "read")
        clock = time.perf_counter()
        dicom = select_series(case.path, case.series) if case.is_dicom else None
        image = (read_series(dicom, channel=case.channel, source=case.path) if dicom is not None
                 else read_image(case.path, channel=case.channel))
        timings["read"] = time.perf_counter() - clock
        labels, tiles, segmented_at = None, 0, previous.segmented_at if previous else None
        confidence = dict(previous.confidence) if previous is not None and reuse else {}
        if "labels" in reuse:
            labels = _read_labels(paths["labels"], image)
        if labels is None:
            _stage(on_stage, case, "segment")
            segmentation = labeller.label(image, source=str(case.path), on_tile=on_tile)
            timings.update(segmentation.timings)
            tiles, segmented_at = segmentation.num_tiles, now()
            labels = segmentation.labels
            names = {value: name for name, value in labeller.classes.items()}
            confidence = {names.get(value, str(value)): round(p, 4) for value, p in segmentation.confidence.items()
                          if value != 0}
            if outputs.classes:
                labels = select_classes(labels, [value for _, value in outputs.classes])
            reuse = {}
        todo = [k for k in wanted if k not in reuse]
        notes: list[str] = []
        if dicom is not None and dicom.shear is not None:
            notes.append(f"the DICOM slices advance {dicom.shear.degrees:.1f}° off their normal (gantry tilt): "
                         "the image was resampled onto a regular grid, and the NIfTI labels are on that grid")
        made, left_out = _write_outputs(case, labeller, outputs, labels, image, dicom, todo,
                                        new_staging(staging), timings, on_stage, notes)
        if previous is not None and reuse:
            notes = [*previous.notes, *(n for n in notes if n not in previous.notes)]
        status = "segmented" if not reuse else "completed"
        kept_left_out = dict(previous.left_out) if previous is not None and reuse else {}
        record = _record(case, status, settings, {**reuse, **made}, {**kept_left_out, **left_out},
                         timings=timings, tiles=tiles, segmented_at=segmented_at, confidence=confidence,
                         notes=notes)
        write_bytes_atomic(staging / record_path.name, record.to_json())
        _stage(on_stage, case, "commit")
        clock = time.perf_counter()
        commit(staging, outputs.out_dir, record_path.name)
        if previous is not None and status == "segmented":
            _remove_outdated(previous, record, outputs.out_dir)
        timings["commit"] = time.perf_counter() - clock
        return CaseOutcome(replace(record, timings=timings), labels if keep_labels else None)
    except MrsegError as err:
        _discard(staging)
        return failed_outcome(case, str(err))
    except (OSError, RuntimeError, MemoryError) as err:
        _discard(staging)
        log.debug("case %s failed", case.path, exc_info=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
        where = f" ({err.filename})" if isinstance(err, OSError) and err.filename else ""
        message = str(err).lower()  # torch's allocators: "out of memory" (CUDA), "can't allocate memory" (CPU)
        transient = isinstance(err, MemoryError) or "out of memory" in message or "can't allocate memory" in message
        return failed_outcome(case, f"{case.path}: {type(err).__name__}: {reason}{where}", transient=transient)
    except BaseException:
        _discard(staging)
        raise


def _write_outputs(
    case: CaseSpec, labeller: Labeller, outputs: OutputSpec, labels: Image, image: Image,
    dicom: DicomSeries | None, todo: Sequence[str], staging: Path, timings: dict[str, float],
    on_stage: StageCallback | None, notes: list[str],
) -> tuple[dict[str, OutputFile], dict[str, str]]:
    """Write each output kind in ``todo`` into ``staging`` under its final name (what the user
    should know about them is added to ``notes``)."""
    chosen = dict(outputs.classes) if outputs.classes else labeller.classes
    names = {value: name for name, value in chosen.items()}
    final = outputs.paths(case.name)
    staged = {kind: staging / path.name for kind, path in final.items()}
    made: dict[str, OutputFile] = {}
    left_out: dict[str, str] = {}
    for kind in todo:
        if kind == "statistics_csv":
            continue  # written with statistics_json
        stage = STAGE_OF_OUTPUT[kind]
        _stage(on_stage, case, stage)
        clock = time.perf_counter()
        if kind == "labels":
            write_image(labels, staged[kind], description=f"{LABEL_MAP_DESCRIPTION} ({labeller.title})")
        elif kind == "dicom_seg":
            if dicom is None:
                raise InputError(f"{case.path}: DICOM-SEG output needs a DICOM series as input; use --output-type "
                                 "nifti for image files")
            try:
                written = write_dicom_seg(labels, dicom, staged[kind], classes=names, model_name=labeller.title)
                notes.extend(written.notes)
            except InputError as err:
                if outputs.output_type != "auto":
                    raise
                log.warning("%s: no DICOM-SEG written (%s); the NIfTI labels are in %s", case.path, err,
                            final["labels"])
                left_out[kind] = str(err)
                continue
        elif kind == "masks":
            write_class_masks(labels, chosen, staged[kind])
        elif kind == "statistics_json":
            rows = class_statistics(labels, image, names=names)
            base = staged[kind].with_name(staged[kind].name.removesuffix(".json"))
            write_statistics(rows, base, meta={"case": case.name, "image": str(case.path),
                                               "labels": str(final["labels"])})
            made["statistics_csv"] = OutputFile(final["statistics_csv"].name, staged["statistics_csv"].stat().st_size)
        elif kind == "preview":
            write_preview(labels, image, staged[kind], names=names, title=case.name)
        made[kind] = OutputFile(final[kind].name, _size(staged[kind]))
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - clock
    return made, left_out


def _remove_outdated(previous: CaseRecord, record: CaseRecord, out_dir: Path) -> None:
    """Remove outputs the previous record lists that the new one does not: they were made from the
    labels just replaced, so keeping them would pair new labels with old statistics or masks."""
    kept = {output.path for output in record.outputs.values()}
    for output in previous.outputs.values():
        path = out_dir / output.path
        if output.path in kept or not path.exists():
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        log.info("%s: removed (made from labels that were replaced)", path)


def _read_labels(path: Path, image: Image | None = None) -> Image | None:
    """The existing label map when it is readable (and on ``image``'s grid, if given), else None:
    segment again, or, for a combination, report the map as missing."""
    try:
        labels = read_image(path)
    except MrsegError:
        return None
    return labels if image is None or labels.geometry.same_grid(image.geometry, atol=1e-3) else None


def _present(out_dir: Path, output: OutputFile) -> bool:
    """Whether a recorded output is still there with its recorded size."""
    path = out_dir / output.path
    return path.exists() and _size(path) == output.bytes


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _input_identity(case: CaseSpec) -> dict[str, int]:
    """Sizes that change when the input is replaced: a file's bytes; a folder's file count and bytes."""
    if case.path.is_dir():
        files = [p for p in case.path.rglob("*") if p.is_file()]
        return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    return {"bytes": case.path.stat().st_size}


def _comparable(settings: Mapping[str, Any]) -> Any:
    """Settings as JSON gives them back (tuples → lists), so a fresh dict compares with a read one."""
    return json.loads(json.dumps(settings, default=str))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    before, after = _comparable(old), _comparable(new)
    keys = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    shown = []
    for key in keys[:3]:
        if key == "checkpoints":
            shown.append("another model or other folds")
        elif key == "input":
            shown.append("the input file changed")
        else:
            shown.append(f"{key} {before.get(key)!r} then, {after.get(key)!r} now")
    return shown


def _stage(callback: StageCallback | None, case: CaseSpec, stage: str) -> None:
    log.debug("%s: %s", case.name, stage)
    if callback is not None:
        callback(case, stage)


def _discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def _record(case: CaseSpec, status: str, settings: Mapping[str, Any], outputs: Mapping[str, OutputFile],
            left_out: Mapping[str, str], *, error: str | None = None, timings: Mapping[str, float] | None = None,
            tiles: int = 0, segmented_at: str | None = None, confidence: Mapping[str, float] | None = None,
            notes: Sequence[str] = ()) -> CaseRecord:
    return CaseRecord(
        name=case.name, input=str(case.path), status=status, settings=dict(settings), outputs=dict(outputs),
        left_out=dict(left_out), error=error, timings=dict(timings or {}), tiles=tiles, segmented_at=segmented_at,
        finished_at=now(), host=socket.gethostname(), pid=os.getpid(), versions=software_versions(),
        confidence=dict(confidence or {}), notes=list(notes),
    )


def failed_outcome(case: CaseSpec, error: str, *, transient: bool = False) -> CaseOutcome:
    """The outcome of a case that failed (nothing of it written)."""
    return CaseOutcome(_record(case, "failed", {}, {}, {}, error=error), transient=transient)


__all__ = ["CaseBusy", "CaseOutcome", "CombinedLabels", "Labeller", "failed_outcome", "process_case"]

