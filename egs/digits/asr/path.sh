# Recipe environment: the project's venv and its tools (as Kaldi's path.sh).
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export PATH="$MAIN_ROOT/.venv/bin:$MAIN_ROOT/tools:$PATH"
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
