"""Runs the wilor backend in-process, in wilor's environment, for tests run from the main one.

    python wilor_inprocess.py JOB.json OUT.json

JOB: {"model": <the config's model section>, "queries": [{"image": "x.npy", "options": {DetectOptions fields},
"given": [[[x1, y1, x2, y2], is_right], ...]}]}. Options and given hands go through the servicer's own parsing,
and the adapter is loaded and warmed up as the runtime does, so the results are what the service computes.
OUT: {"filled_fields": [...], "info": {...}, "results": [[hand as JSON, ...] per query]}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from modelyard.v1 import types_pb2, wilor_pb2
from modelyard.wilor.client import hand_to_json, options_message
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.hands import Query
from modelyard.wilor.model import WiLoRAdapter
from modelyard.wilor.servicer import parse_given_hands, parse_options


def main(job_path: str, out_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    config = WiLoRConfig.model_validate(job["model"])
    adapter = WiLoRAdapter(config, "cpu")
    adapter.load()
    adapter.warmup()
    queries = []
    for spec in job["queries"]:
        image = np.load(spec["image"])
        options = parse_options(options_message(**spec.get("options", {})), config)
        given = [
            wilor_pb2.GivenHand(
                box=types_pb2.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]),
                side=wilor_pb2.HAND_SIDE_RIGHT if right else wilor_pb2.HAND_SIDE_LEFT,
            )
            for b, right in spec.get("given", [])
        ]
        query = Query(image, options)
        parsed = parse_given_hands(given, image.shape[0], image.shape[1], config.max_hands_limit, "query")
        if parsed is not None:
            query.boxes, query.is_right = parsed
        queries.append(query)
    results = adapter.infer(queries)
    out = {
        "filled_fields": list(adapter.filled_fields),
        "info": adapter.info(),
        "results": [[hand_to_json(h) for h in hands] for hands in results],  # type: ignore[union-attr]
    }
    Path(out_path).write_text(json.dumps(out, default=str))
    adapter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
