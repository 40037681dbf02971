#!/bin/sh
# The streaming function's handler (template.yaml, CompletionsStreamFunction): the AWS Lambda Web
# Adapter's wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs this file instead of a Python
# handler, then forwards every Function URL request to the app on AWS_LWA_PORT and streams its
# answer back. Runs the same anywhere: from the code's root, with the code importable.
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m handlers.stream_app --port "${AWS_LWA_PORT:-${PORT:-8080}}"
