#!/usr/bin/env bash
# Runs a single-node Apache Kafka 4.x broker (KRaft) from the official jars, resolved by Maven.
#   KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA_DIR (var/kafka) may be set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-9093}
data_dir=${KAFKA_DATA_DIR:-$root/var/kafka}

"$here/fetch.sh"
mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
props="$data_dir/server.properties"
sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" -e "s|@DATA_DIR@|$data_dir|g" \
  "$here/server.properties.in" >"$props"

classpath="$here/lib/*"
export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$here/log4j2.yaml"
java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true "-Dlog4j2.configurationFile=$here/log4j2.yaml")

if [ ! -f "$data_dir/data/meta.properties" ]; then
  java "${java_opts[@]}" -cp "$classpath" kafka.tools.StorageTool format --standalone \
    -t "$(java -cp "$classpath" kafka.tools.StorageTool random-uuid)" -c "$props" >/dev/null
fi
exec java "${java_opts[@]}" -cp "$classpath" kafka.Kafka "$props"
