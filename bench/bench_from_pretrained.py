"""Time ``NCSNPipeline.from_pretrained(FOLDER, export=True)``: the first load (exports) and two cached loads.

    .venv/bin/python bench/bench_from_pretrained.py PIPELINE_FOLDER [--cache-dir DIR]

``PIPELINE_FOLDER`` is a diffusers-ncsn pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``); the
cache directory (default: a temporary one) is emptied first, so the first load exports with the default options.
Also times ``save_pretrained`` and the parts of a cached load: the folder's digests (the cache key), the check of
every file of the entry, and the ordinary load of the export directory (which checks its graphs again).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from ncsn_runtime import NCSNPipeline, pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-from-pretrained-"))
    cache = Path(args.cache_dir) if args.cache_dir else scratch / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        pipe = NCSNPipeline.from_pretrained(args.folder, export=True, cache_dir=cache)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    pipe.save_pretrained(scratch / "saved")
    saved = time.perf_counter() - start
    parts = {}
    for name, work in (("digests", lambda: pretrained.pipeline_digests(Path(args.folder))),
                       ("check every file", lambda: pretrained.verify_export_dir(pipe.export_dir)),
                       ("ordinary load", lambda: NCSNPipeline.from_pretrained(pipe.export_dir))):
        start = time.perf_counter()
        work()
        parts[name] = time.perf_counter() - start
    size = sum(path.stat().st_size for path in pipe.export_dir.rglob("*") if path.is_file())
    print(f"{args.folder}: first {times[0]:.1f} s, cached {times[1]:.3f} s / {times[2]:.3f} s "
          f"(ratio {times[0] / times[1]:.0f}); save_pretrained {saved:.2f} s; export {size / 1e6:.1f} MB; "
          + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items()) + f"; {pretrained.STATS}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
