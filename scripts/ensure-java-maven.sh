#!/usr/bin/env bash
# Makes sure the local Kafka broker can be fetched and run: Java 17+ (`java`) and Maven (`mvn`,
# used once by deploy/kafka/fetch.sh). Installs the Debian packages default-jre-headless and maven
# with apt-get when one is missing (non-interactive; sudo only when not root); does nothing
# otherwise.
set -euo pipefail

say() { printf 'ensure-java-maven: %s\n' "$*" >&2; }
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

java_major() {
  # `java -version` prints e.g.: openjdk version "17.0.15" 2025-04-15  (or "1.8.0_392")
  local version
  version=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  version=${version#1.}
  printf '%s\n' "${version%%[.+-]*}"
}

missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)

if [ "${#missing[@]}" -gt 0 ]; then
  apt_can_install "missing ${missing[*]}" "Java 17+ and Maven"
  say "installing ${missing[*]} (Debian packages)"
  apt_install "${missing[@]}"
fi

major=$(java_major)
if ! [[ "$major" =~ ^[0-9]+$ ]] || [ "$major" -lt 17 ]; then
  say "Kafka 4 needs Java 17 or newer; \`java\` here is version '${major:-unknown}'"
  exit 1
fi
command -v mvn >/dev/null 2>&1 || { say "mvn is still missing"; exit 1; }
