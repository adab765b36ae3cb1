#!/usr/bin/env bash
# The main job. Until the built-in experiment lands: run the derivation notebooks' numerical checks.
source "$(dirname "$0")/env.sh"
nbdev_test --path nbs/00_objective.ipynb --timing
nbdev_test --path nbs/01_decomposition.ipynb --timing
nbdev_test --path nbs/02_logit_grad.ipynb --timing
echo "All derivation checks passed."
