"""Decide the demo model's postprocessing as nnU-Net decides it, on validation cases.

Predicts every case of a folder (``mrseg phantom``'s layout, e.g. drawn by the training recipe
with seeds no training used:
``train_demo_model.py @docs/demo_model_rules/flags_v210.txt --cases 40 --seed 60000 --work W --skip-training``)
with the model's networks alone (no postprocessing, fp32), then keeps nnU-Net's "largest
connected component" steps that raise the Dice on them (:mod:`mrseg.evaluation.postprocessing`)
and writes them as nnU-Net's ``postprocessing.json``, which a model folder applies from then on.

    python scripts/determine_demo_postprocessing.py --model demo --cases W/cases --out W/postprocessing.json

Prints each step tried with the label's mean Dice before and with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main() -> None:
    from mrseg.evaluation.postprocessing import determine_postprocessing
    from mrseg.inference.segmenter import Segmenter
    from mrseg.io import read_image
    from mrseg.model.postprocessing import write_postprocessing
    from mrseg.model.store import resolve_model_folder
    from mrseg.training.dataset import cases_from_folder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="model name or folder (default: demo)")
    parser.add_argument("--cases", type=Path, required=True, help="folder of NAME.nii.gz + NAME_labels.nii.gz")
    parser.add_argument("--out", type=Path, required=True, help="the postprocessing.json to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    folder = resolve_model_folder(args.model)
    segmenter = Segmenter(folder, precision="fp32")
    cases = cases_from_folder(args.cases)
    started = time.time()

    def predicted_cases():  # one case in memory at a time
        for number, case in enumerate(cases, start=1):
            image, reference = read_image(case.image), read_image(case.label)
            yield segmenter.run(image, source=str(case.image)).labels.array, reference.array
            print(f"{number}/{len(cases)} {Path(case.image).name} predicted ({time.time() - started:.0f} s)",
                  flush=True)

    labels = sorted(segmenter.model.dataset.foreground.values())
    decision = determine_postprocessing(predicted_cases(), labels)
    names = {value: name for name, value in segmenter.model.dataset.foreground.items()}
    for step, kept in decision.tried:
        shown = "all foreground" if len(step.labels) > 1 else names[step.labels[0]]
        print(f"{'kept    ' if kept else 'not kept'} largest component of {shown}")
    before, after = (decision.foreground_mean(d) for d in (decision.dice_before, decision.dice_after))
    print(f"foreground mean Dice on {len(cases)} cases: {before:.5f} before, {after:.5f} after")
    write_postprocessing(decision.steps, args.out, **decision.summary(),
                         determined_on={"cases": str(args.cases), "count": len(cases), "model": str(folder)})
    print(f"wrote {args.out} ({len(decision.steps)} steps; {time.time() - started:.0f} s)")
    print(json.dumps({names[s.labels[0]] if len(s.labels) == 1 else "all foreground": list(s.labels)
                      for s in decision.steps}))


if __name__ == "__main__":
    main()
