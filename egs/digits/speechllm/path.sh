# Recipe environment: the project's venv and its tools (as Kaldi's path.sh).
# SPEECHLM_ROOT overrides where the project is (for a recipe copied elsewhere).
MAIN_ROOT=${SPEECHLM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
export PATH="$MAIN_ROOT/.venv/bin:$MAIN_ROOT/tools:$PATH"
export PYTHONUNBUFFERED=1
