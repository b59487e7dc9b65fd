#!/usr/bin/env bash
# Resolves the Kafka broker jars from Maven Central into deploy/kafka/lib once; later runs reuse them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$here/lib/.complete" ]; then
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies
  touch "$here/lib/.complete"
fi
