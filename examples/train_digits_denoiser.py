"""Train the example denoiser and write its three release folders.

    python examples/train_digits_denoiser.py OUT_DIR [--seed N] [--force]

OUT_DIR then holds ``v1/``, ``v2/`` and ``v3-broken/`` (see docs/release-folder.md), ready for
``edgeota release publish OUT_DIR/v1 --component denoiser --version 1.0.0``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from edgeota.modelops.digits import COMPONENT, build_example_releases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a build exists")
    args = parser.parse_args(argv)

    built = build_example_releases(args.out_dir, seed=args.seed, force=args.force)
    state = "reused an earlier build" if built.cached else "trained"
    print(f"{state} in {built.out_dir} (seed {built.seed})")
    print(f"corrupted inputs (baseline): PSNR {built.noisy_psnr_db:5.2f} dB")
    print(f"{'release':<10} {'version':<8} {'PSNR dB':>8} {'train s':>8} {'bytes':>8}  tolerance")
    for r in built.releases:
        psnr = f"{r.psnr_db:8.2f}" if math.isfinite(r.psnr_db) else f"{'NaN':>8}"
        print(
            f"{r.name:<10} {r.version:<8} {psnr} {r.train_seconds:8.2f} {r.model_bytes:8d}"
            f"  {r.tolerance}"
        )
    print(
        f"publish with: edgeota release publish {built.v1.path} --component {COMPONENT} "
        f"--version {built.v1.version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
