"""Decodes an uncompressed OTLP ExportLogsServiceRequest with the official
`opentelemetry-proto` package and prints it as JSON (protobuf's JSON mapping).

Usage: python3 decode_otlp.py FILE   (FILE holds the protobuf bytes)

Used by the end-to-end tests as a decoder independent of sidekick's own
hand-written encoder. Exit status 3 when the package is not installed.
"""

import json
import sys

try:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"decode_otlp.py: {e} (pip install opentelemetry-proto)", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    req = ExportLogsServiceRequest()
    req.ParseFromString(data)
    json.dump(MessageToDict(req), sys.stdout)


if __name__ == "__main__":
    main()
