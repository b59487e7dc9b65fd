#!/usr/bin/env bash
# Runs a single-node Apache Kafka 4.x broker (KRaft) from the official jars, resolved by Maven.
#   KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_DATA_DIR (var/kafka) may be set.
#   KAFKA_PROPERTIES_TEMPLATE: another template with the same @...@ placeholders (a test's broker
#   with SASL over TLS, say); KAFKA_FORMAT_ARGS: more arguments for the first format of the data
#   directory, e.g. `--add-scram SCRAM-SHA-256=[name=NAME,password=PASSWORD]` (SCRAM users exist
#   from the start, before any client can create them); KAFKA_JAVA_OPTS: more JVM options, after
#   the defaults (the test suite's brokers compile with C1 only: `-XX:TieredStopAtLevel=1`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-9093}
data_dir=${KAFKA_DATA_DIR:-$root/var/kafka}
template=${KAFKA_PROPERTIES_TEMPLATE:-$here/server.properties.in}
read -r -a format_args <<<"${KAFKA_FORMAT_ARGS:-}"

"$here/fetch.sh"
mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
props="$data_dir/server.properties"
sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" -e "s|@DATA_DIR@|$data_dir|g" \
  "$template" >"$props"
chmod 600 "$props" # a secured broker's template holds its keystore password

classpath="$here/lib/*"
export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$here/log4j2.yaml"
java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true "-Dlog4j2.configurationFile=$here/log4j2.yaml")
read -r -a more_java_opts <<<"${KAFKA_JAVA_OPTS:-}"
java_opts+=(${more_java_opts[@]+"${more_java_opts[@]}"})

if [ ! -f "$data_dir/data/meta.properties" ]; then
  java "${java_opts[@]}" -cp "$classpath" kafka.tools.StorageTool format --standalone \
    -t "$(java -cp "$classpath" kafka.tools.StorageTool random-uuid)" -c "$props" \
    ${format_args[@]+"${format_args[@]}"} >/dev/null
fi
exec java "${java_opts[@]}" -cp "$classpath" kafka.Kafka "$props"
