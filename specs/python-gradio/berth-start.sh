#!/bin/sh
# Start script of the berth python-gradio spec. berth sets CL_APP_PATH ("/x" or "" at a
# domain root), PORT and every param (app_file, ...) as env vars. Gradio reads the GRADIO_*
# variables in launch().
set -e
export GRADIO_ROOT_PATH="$CL_APP_PATH"
export GRADIO_SERVER_NAME=0.0.0.0
export GRADIO_SERVER_PORT="${PORT:-7860}"
exec python "${app_file:-run.py}"
