#!/usr/bin/env bash
# The GPU recipe rehearsed on CPU (CI runs it): the path the lent machine will take, tested every day.
# What it builds, in a scratch folder, to stand in for the machine's image (scripts/gpu_image.txt):
#   - a fresh virtualenv with none of the dev tools and no diffmas; the image's packages are linked in from .venv
#     (torch and the rest: no download), except the Hugging Face stack, installed at the image's versions
#     (transformers 5.17, huggingface-hub 1.33, tokenizers 0.23.2, accelerate 1.15) so that the carried wheels
#     must shadow them as they will there;
#   - the carried wheels (scripts/fetch_gpu_wheels.py, this interpreter's pydantic-core) checked and fetched;
#   - a copy of the working tree without .venv (the files the device tool sends), where `python3` on PATH is that
#     virtualenv: then `scripts/gpu_check.sh --cpu --wheels DIR`, the device command with --cpu.
# Differences from the machine that remain: torch is .venv's CPU build (the image has 2.11 + CUDA 13), the
# interpreter is .venv's (the image has 3.12), and the packages whose image version is unknown come at .venv's.
# About 2 minutes; needs PyPI (cached by pip) for the image's Hugging Face stack and the wheels.
#   scripts/gpu_rehearsal.sh           # after scripts/setup.sh (it borrows .venv's torch)
#   DIFFMAS_DEV_VENV=../main/.venv scripts/gpu_rehearsal.sh   # borrow another checkout's .venv
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dev=${DIFFMAS_DEV_VENV:-.venv}
[[ -n ${DIFFMAS_DEV_VENV:-} || -x .venv/bin/python ]] || bash scripts/setup.sh
R=${DIFFMAS_REHEARSAL_DIR:-${TMPDIR:-/tmp}/diffmas-gpu-rehearsal}
rm -rf "$R"
mkdir -p "$R"
start=$SECONDS
base=$("$dev/bin/python" -c 'import sys; print(sys._base_executable)')
"$base" -m venv --without-pip "$R/venv"
site=$("$R/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
# the image's Hugging Face stack at its versions (from PyPI), and their needs the image has but .venv lacks
image_hf=(transformers==5.17.0 huggingface-hub==1.33.0 tokenizers==0.23.2 accelerate==1.15.0 httpx==0.28.1
  httpcore==1.0.9)
"$dev/bin/python" - "$site" scripts/gpu_image.txt "${image_hf[@]}" << 'EOF'
"""Link every package of the image list that .venv holds into the rehearsal's site-packages (not the ones
installed at the image's version below, and never diffmas)."""
import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

site, image_list, *pypi = sys.argv[1:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
skip = {norm(p.split("==")[0]) for p in pypi} | {"diffmas"}
image = {norm(line.split("#")[0].split("==")[0].strip()) for line in open(image_list)} - {""}
linked = []
for dist in md.distributions():
    name = norm(dist.metadata["Name"])
    if name not in image or name in skip:
        continue
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in tops:
        source = Path(dist._path).parent / top  # type: ignore[attr-defined]
        target = Path(site) / top
        if source.exists() and not target.exists() and not top.startswith("__editable__"):
            os.symlink(source, target)
    linked.append(name)
print(f"rehearsal: {len(linked)} of the image's {len(image)} packages linked from .venv")
EOF
"$R/venv/bin/python" -m pip install -q --no-deps --disable-pip-version-check "${image_hf[@]}"
pyver=$("$R/venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
"$dev/bin/python" scripts/fetch_gpu_wheels.py --python-version "$pyver" --dest "$R/whl"
# the tree as the device tool sends it: tracked files and untracked ones git does not ignore (no .venv)
mkdir -p "$R/tree"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  if [[ -f $f ]]; then printf "%s\0" "$f"; fi
done | xargs -0 cp --parents -t "$R/tree"
[[ ! -e $R/tree/.venv ]] || { echo "rehearsal: .venv was copied" >&2; exit 1; }
echo "rehearsal: environment ready in $((SECONDS - start)) s"
cd "$R/tree"
# docs/gpu.md's device command, with --cpu and the wheels' folder of this rehearsal; $OUT is the tool's folder there
mkdir -p "$R/out"
env -u DIFFMAS_PYTHON -u PYTHONPATH -u VIRTUAL_ENV PATH="$R/venv/bin:$PATH" OUT="$R/out" WHL="$R/whl" bash -c \
  'set -o pipefail; python3 -m pip list --format=freeze > $OUT/pip_list.txt; DIFFMAS_GPU_CHECK_OUT=$OUT PYTHONUNBUFFERED=1 bash scripts/gpu_check.sh --cpu --wheels $WHL 2>&1 | tee $OUT/gpu_check.log'
for f in pip_list.txt gpu_check.log paper_scale.json; do
  [[ -s $R/out/$f ]] || { echo "rehearsal: the device command left no $f" >&2; exit 1; }
done
echo "rehearsal: passed in $((SECONDS - start)) s"
