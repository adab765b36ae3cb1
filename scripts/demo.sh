#!/usr/bin/env bash
# The main job: the built-in experiment (every estimator on the task suite; table in the console, plots in runs/demo/).
source "$(dirname "$0")/env.sh"
hybrid-ilrl demo "$@"
