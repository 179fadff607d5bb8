#!/bin/sh
# Start script of the berth python-streamlit-poetry spec. berth sets CL_APP_PATH ("/x" or "" at a
# domain root), PORT and every param (app_file, ...) as env vars.
set -e
port="${PORT:-${port:-8501}}"
file="${app_file:-streamlit_app.py}"
if [ -f "$file" ]; then
    set -- run "$file"
else
    echo "berth: $file not found in /app, running 'streamlit hello'" >&2
    set -- hello
fi
exec ${STREAMLIT_CMD:-streamlit} "$@" \
    --server.port="$port" \
    --server.address=0.0.0.0 \
    --server.baseUrlPath="$CL_APP_PATH" \
    --server.headless=true \
    --browser.gatherUsageStats=false
